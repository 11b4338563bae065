# shellcheck shell=bash
# Delete of components/kubeflow_trainer.py's crds command (kubeconfig.sh before it), run on `pulumi destroy`
# after the Trainer release is gone: deletes the CRDs kubeflow_trainer_crds_record.sh printed (the ones the
# stack added), which deletes their remaining objects too. A CRD the cluster had before the stack stays.
# Environment: PULUMI_COMMAND_STDOUT (the record script's output, set by pulumi-command).
read -r -a owned <<<"${PULUMI_COMMAND_STDOUT:-}"
if ((${#owned[@]})); then
    kubectl delete crd "${owned[@]}" --ignore-not-found --wait=true >&2
fi
