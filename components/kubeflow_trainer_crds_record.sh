# shellcheck shell=bash
# Create (and update) of components/kubeflow_trainer.py's crds command, run before the Trainer release with
# kubeconfig.sh before it. The release's charts install some CRDs from their crds/ directories, which Helm
# installs but never deletes (helm.sh/docs/chart_best_practices/custom_resource_definitions): JobSet's.
# Prints those of $CHART_CRDS that the cluster does not have yet, plus those it printed before
# ($PULUMI_COMMAND_STDOUT, on an update), so that the stack owns exactly the CRDs it added;
# kubeflow_trainer_crds_delete.sh deletes them on `pulumi destroy`.
# Environment: CHART_CRDS (space-separated CRD names); PULUMI_COMMAND_STDOUT (set by pulumi-command).
# Needs errexit (kubeconfig.sh sets it): a failed lookup must stop it.
read -r -a names <<<"$CHART_CRDS"
read -r -a owned <<<"${PULUMI_COMMAND_STDOUT:-}"
for crd in "${names[@]}"; do
    if [[ " ${owned[*]} " == *" $crd "* ]]; then
        echo "$crd"
        continue
    fi
    # Empty when it does not exist; an unreachable cluster fails the command instead of claiming the CRD.
    found=$(kubectl get crd "$crd" --ignore-not-found -o name)
    if [[ -z $found ]]; then echo "$crd"; fi
done
