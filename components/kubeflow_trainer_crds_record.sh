# shellcheck shell=bash
# Prints the CRDs of CHART_CRDS the cluster lacks, plus those printed before (PULUMI_COMMAND_STDOUT): the
# ones the stack owns, as Helm never deletes crds/. Needs errexit (kubeconfig.sh).
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
