# shellcheck shell=bash
# At destroy, after the release: deletes the CRDs the record script printed (PULUMI_COMMAND_STDOUT), those
# the stack added; a CRD the cluster had before stays.
read -r -a owned <<<"${PULUMI_COMMAND_STDOUT:-}"
if ((${#owned[@]})); then
    if ! kubectl delete crd "${owned[@]}" --ignore-not-found --wait=true >&2; then
        # destroy uses the kubeconfig kept at the last `up`: say how to give it the current one.
        if [ -z "${TRAINSTACK_KUBECONFIG_PATH:-}" ] && ! kubectl auth whoami >/dev/null 2>&1; then
            echo "trainstack: the cluster refuses the kubeconfig saved at the last pulumi up; with the current one:" \
                "pulumi config set --secret kubeconfig < <file> && pulumi up --target '**::cluster-provider'" \
                "--target '**::kubeflow-trainer-crds' --yes, then pulumi destroy again" >&2
        fi
        exit 1
    fi
fi
