# shellcheck shell=bash
# Delete of components/kubeflow_trainer.py's crds command (kubeconfig.sh before it), run on `pulumi destroy`
# after the Trainer release is gone: deletes the CRDs kubeflow_trainer_crds_record.sh printed (the ones the
# stack added), which deletes their remaining objects too. A CRD the cluster had before the stack stays.
# Environment: PULUMI_COMMAND_STDOUT (the record script's output, set by pulumi-command).
read -r -a owned <<<"${PULUMI_COMMAND_STDOUT:-}"
if ((${#owned[@]})); then
    if ! kubectl delete crd "${owned[@]}" --ignore-not-found --wait=true >&2; then
        # destroy runs with the kubeconfig the state kept at the last `up` (the kubeconfig secret): say how to
        # give it the current one (docs/stack.md, "Credentials that changed").
        if [ -z "${TRAINSTACK_KUBECONFIG_PATH:-}" ] && ! kubectl auth whoami >/dev/null 2>&1; then
            echo "trainstack: the cluster refuses the kubeconfig saved at the last pulumi up; with the current one:" \
                "pulumi config set --secret kubeconfig < <file> && pulumi up --target '**::cluster-provider'" \
                "--target '**::kubeflow-trainer-crds' --yes, then pulumi destroy again" >&2
        fi
        exit 1
    fi
fi
