"""Issue 23's cluster cases under the real engine on the test cluster (part of `make e2e`): `clusterops`.

One 1-node stack on `clusterKind: existing` reaches the cluster through a kubeconfig *file*
(`kubeconfigPath`) whose user is a ServiceAccount with a token Secret of its own, as a CI deployer has:
  - `pulumi up` passes the Trainer readiness gate, which now waits for ready endpoints of every webhook
    Service (case 8); the TrainJob is admitted by those webhooks and completes (`webhook_endpoints`);
  - the token is rotated (a new token Secret, the old one deleted: the API server then refuses it, HTTP 401)
    and the file rewritten; `pulumi destroy`, which runs no program, still removes everything, because the
    provider and the commands read the file when they run (case 9, `rotated_destroy`);
  - JobSet v0.10.0's CRD (tests/upstream/jobset, the last release without `onJobFailureMessagePatterns`)
    applied to the cluster as an older JobSet would have left it: `pulumi preview` of the stack stops with one
    line naming the missing field, and nothing is created (case 10, `old_jobset_crd`).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.faults import for_stack, set_config, set_override
from tests.e2e.harness import REPO_ROOT, check, wait_until
from tests.e2e.real_run import NAMESPACE, Run

OPS_STACK = "e2e-ops"
OPS_JOB = "gpt-ops"
OPS_STEPS = 20
DEPLOYER_NAMESPACE = "trainstack-e2e-deployer"
DEPLOYER = "deployer"
OLD_JOBSET_CRD = REPO_ROOT / "tests" / "upstream" / "jobset" / "jobsets-v0.10.0.yaml"
TRAINER_NAMESPACE = "kubeflow-system"


def deployer_objects() -> list[dict[str, Any]]:
    """The deployer's namespace and ServiceAccount, bound to cluster-admin (the stack installs CRDs)."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEPLOYER_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": DEPLOYER, "namespace": DEPLOYER_NAMESPACE},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": DEPLOYER_NAMESPACE},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": DEPLOYER, "namespace": DEPLOYER_NAMESPACE}],
        },
    ]


def new_token(run: Run, name: str) -> str:
    """A token Secret for the deployer, once the token controller has filled it: its token."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": name,
            "namespace": DEPLOYER_NAMESPACE,
            "annotations": {"kubernetes.io/service-account.name": DEPLOYER},
        },
    }
    run.kubectl("apply", "-f", "-", input=json.dumps(secret))

    def token() -> str:
        found = run.kube_json("get", "secret", name, "-n", DEPLOYER_NAMESPACE, log=False)
        return base64.b64decode((found.get("data") or {}).get("token", "")).decode()

    value: str = wait_until(f"the token of Secret {name}", 120, token)
    return value


def write_kubeconfig(run: Run, path: Path, token: str) -> None:
    """The test cluster's admin kubeconfig with the deployer's token as its user, private."""
    document = yaml.safe_load(Path(run.cluster["KUBECONFIG"]).read_text())
    for user in document["users"]:
        user["user"] = {"token": token}
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def answers(run: Run, token: str) -> int:
    """The HTTP status the API server gives GET /version with this bearer token."""
    document = yaml.safe_load(Path(run.cluster["KUBECONFIG"]).read_text())
    server = document["clusters"][0]["cluster"]["server"]
    result = run.sh.run(
        [
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            f"Authorization: Bearer {token}",
            f"{server}/apis",
        ],
        check=False,
        log=False,
    )
    return int(result.stdout or 0)


def ready_endpoints(run: Run) -> dict[str, int]:
    """Ready endpoints of each Service in the Trainer's namespace, from its EndpointSlices."""
    slices = run.kube_json("get", "endpointslices", "-n", TRAINER_NAMESPACE)["items"]
    counts: dict[str, int] = {}
    for item in slices:
        service = item["metadata"].get("labels", {}).get("kubernetes.io/service-name", "?")
        ready = [e for e in item.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")]
        counts[service] = counts.get(service, 0) + len(ready)
    return counts


def webhook_services(run: Run) -> list[str]:
    """namespace/name of every Service the Trainer's and JobSet's webhooks call."""
    found = set()
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        for item in run.kube_json("get", kind)["items"]:
            for hook in item.get("webhooks") or []:
                service = hook.get("clientConfig", {}).get("service")
                if service and service["namespace"] == TRAINER_NAMESPACE:
                    found.add(f"{service['namespace']}/{service['name']}")
    return sorted(found)


def rotated_destroy(ops: Run, base_image: str) -> None:
    with ops.report.phase("webhook_endpoints") as record:
        ops.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in deployer_objects()))
        kubeconfig = ops.run_dir / "deployer.kubeconfig"
        first = new_token(ops, f"{DEPLOYER}-token-1")
        write_kubeconfig(ops, kubeconfig, first)
        ops.sh.run(["pulumi", "stack", "init", ops.stack, "--non-interactive"])
        ops.stack_config(base_image, OPS_STEPS)
        set_override(ops, "checkpoint.every_steps", 10)
        ops.pulumi("config", "rm", "kubeconfig")
        set_config(ops, "kubeconfigPath", str(kubeconfig))
        started = time.monotonic()
        ops.pulumi("up", "--yes", "--skip-preview", timeout=3600)
        record["up_seconds"] = round(time.monotonic() - started, 1)
        # The gate passed: every Service the webhooks call had a ready endpoint before the runtime was made.
        services = webhook_services(ops)
        endpoints = ready_endpoints(ops)
        record.update(webhook_services=services, ready_endpoints=endpoints)
        check(bool(services), "no webhook calls a Service in the Trainer's namespace")
        missing = [s for s in services if not endpoints.get(s.split("/", 1)[1])]
        check(not missing, f"webhook Services without a ready endpoint after up: {missing}")
        ops.wait_complete(1200)
        record["trainjob_complete"] = True
    with ops.report.phase("rotated_destroy") as record:
        second = new_token(ops, f"{DEPLOYER}-token-2")
        write_kubeconfig(ops, kubeconfig, second)
        ops.kubectl("delete", "secret", f"{DEPLOYER}-token-1", "-n", DEPLOYER_NAMESPACE, "--wait=true")
        record["old_token_status"] = wait_until(
            "the old token refused (HTTP 401)", 120, lambda: answers(ops, first) == 401 and 401
        )
        record["new_token_status"] = answers(ops, second)
        check(record["new_token_status"] == 200, f"the new token gets HTTP {record['new_token_status']}")
        started = time.monotonic()
        destroy = ops.pulumi("destroy", "--yes", "--skip-preview", timeout=1800, check=False)
        record["destroy_seconds"] = round(time.monotonic() - started, 1)
        record["destroy_exit"] = destroy.returncode
        if destroy.returncode:
            record["destroy_tail"] = (destroy.stdout + destroy.stderr).strip().splitlines()[-8:]
        check(
            destroy.returncode == 0,
            f"pulumi destroy with rotated credentials failed: {record.get('destroy_tail')}",
        )
        # The deployer's own binding is this scenario's (removed below), not the stack's.
        record["leftovers"] = [found for found in ops.leftovers("") if DEPLOYER_NAMESPACE not in found]
        check(not record["leftovers"], f"left behind: {record['leftovers']}")
        ops.pulumi("stack", "rm", "--yes")


def old_jobset_crd(ops: Run, base_image: str) -> None:
    with ops.report.phase("old_jobset_crd") as record:
        ops.kubectl("apply", "--server-side", "-f", str(OLD_JOBSET_CRD))
        try:
            ops.sh.run(["pulumi", "stack", "init", ops.stack, "--non-interactive"])
            ops.stack_config(base_image, OPS_STEPS)
            preview = ops.pulumi("preview", check=False, timeout=600)
            output = preview.stdout + preview.stderr
            lines = [line.strip() for line in output.splitlines() if "onJobFailureMessagePatterns" in line]
            state = json.loads(ops.pulumi("stack", "export").stdout)
            resources = state.get("deployment", {}).get("resources") or []
            record.update(exit=preview.returncode, error=lines[:1], resources_in_state=len(resources))
            ops.pulumi("stack", "rm", "--yes", "--force")
            check(preview.returncode != 0, "preview succeeded on a cluster with JobSet v0.10.0's CRD")
            # The CLI repeats a program's error under Diagnostics: what counts is one line saying it all.
            check(
                bool(lines)
                and all(
                    "trainstack:kubeconfig: the cluster's jobsets.jobset.x-k8s.io CRD lacks" in line
                    for line in lines
                ),
                f"no line naming onJobFailureMessagePatterns in:\n{output[-800:]}",
            )
            check(not resources, f"{len(resources)} resources in state")
            untouched = ops.kubectl("get", "namespace", NAMESPACE, check=False).returncode != 0
            check(untouched, f"namespace {NAMESPACE} exists after the refused preview")
        finally:
            ops.kubectl("delete", "-f", str(OLD_JOBSET_CRD), "--ignore-not-found", "--wait=true", check=False)


def clusterops(run: Run, base_image: str) -> None:
    """The scenarios above, one after the other, on their own stack; the deployer's objects removed after."""
    ops = for_stack(run, OPS_STACK, OPS_JOB)
    try:
        rotated_destroy(ops, base_image)
    finally:
        # Whatever a failed phase left: removed with the admin's credentials, in the file the state names.
        kubeconfig = ops.run_dir / "deployer.kubeconfig"
        if kubeconfig.exists():
            kubeconfig.write_text(Path(run.cluster["KUBECONFIG"]).read_text())
        ops.pulumi("destroy", "--yes", "--skip-preview", timeout=1800, check=False)
        ops.pulumi("stack", "rm", "--yes", "--force", check=False)
        for kind, name in (("namespace", DEPLOYER_NAMESPACE), ("clusterrolebinding", DEPLOYER_NAMESPACE)):
            ops.kubectl("delete", kind, name, "--ignore-not-found", "--wait=true", timeout=300, check=False)
    old_jobset_crd(ops, base_image)
