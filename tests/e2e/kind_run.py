"""The default stack, `dev` (clusterKind kind), for real: `make e2e E2E_ARGS="--only kind"`.

Our `pulumi up` of the project's own Pulumi.dev.yaml (kind creates the cluster, `kind load` delivers the image),
with only what this machine needs set on top: the node image the toolchain's kind part builds (`kindNodeImage`,
nothing pulled), the local Trainer chart, the CPU base image and a short training. Then, as for `existing`
(tests/e2e/real_run.py): the outputs, the TrainJob Complete with its checkpoints, `logsCommand`, a second
`pulumi up --expect-no-changes`, a rollout that resumes, and `pulumi destroy` leaving no kind container, network,
volume or image tag (report key `kind_dev`). Then a 2-node kind stack: one job across both nodes, its final
loss against the same training on two local processes (`kind_dev-multinode`). In the default `make e2e` these
run after the test cluster's phases, once that cluster is down.

The fixture: tests/e2e/kind/docker is first on PATH, so kind's nodes start with the near-privileged flags in
place of the `--privileged` this machine's Docker refuses (tests/e2e/kind/README.md). The product is unchanged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from components.cluster.kind import kind_shared_directory
from components.cluster.provider import SHARED_STORAGE_PATH
from tests.e2e.faults import LOSS_TOLERANCE, reference_loss
from tests.e2e.harness import CACHE, check, labelled_containers, read_env_file
from tests.e2e.real_run import NAMESPACE, Run, training_settings

KIND_FIXTURE = Path(__file__).resolve().parent / "kind"
KIND_STACK = "dev"
KIND_CLUSTER = "trainstack-e2e-kind"
KIND_JOB = "gpt-kind"
MULTINODE_STACK = "dev-multinode"
MULTINODE_CLUSTER = "trainstack-e2e-kind2"
MULTINODE_STEPS = 60
# Free space the kind phases need on Docker's filesystem (their peak, measured as the test cluster's
# MIN_FREE_GIB is, with room): the 2-node stack's two workers each keep the image's layers and their unpacked
# copy, beside the archive `kind load` reads (docs/benchmarks.md, "kind in the end-to-end run").
KIND_MIN_FREE_GIB = 40
# What kind labels its node containers with (sigs.k8s.io/kind pkg/cluster/internal/providers/docker/constants.go).
KIND_CLUSTER_LABEL = "io.x-k8s.kind.cluster"


def kind_node_image() -> str | None:
    """The node image the toolchain's kind part built (kind-images.env), or None."""
    env = CACHE / "kind-images.env"
    return read_env_file(env).get("KIND_NODE_IMAGE") if env.exists() else None


def fixture_config(project: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Pulumi.dev.yaml's own config with the fixture's settings on top (trainstack: keys)."""
    config: dict[str, Any] = yaml.safe_load((project / "Pulumi.dev.yaml").read_text())["config"]
    return {**config, **{f"trainstack:{key}": value for key, value in settings.items()}}


class KindRun(Run):
    """A Run whose cluster is the one the stack itself makes with kind, through the fixture's docker."""

    pushed = False  # `kind load` puts the image on the nodes

    def __init__(self, run: Run, stack: str, job: str, cluster_name: str, nodes: int) -> None:
        super().__init__(run.run_dir / stack, nodes, stack=stack, job=job)
        self.report = run.report.nested(f"kind_{stack}")  # its `up`, `destroy`... beside the test cluster's
        self.cluster_name = cluster_name
        self.sh.env["PATH"] = f"{KIND_FIXTURE}:{self.sh.env['PATH']}"
        self.cluster = {"KUBECONFIG": str(self.run_dir / "kubeconfig")}
        self.copies = self.run_dir / "from-nodes"

    def stack_config(
        self, base_image: str, max_steps: int, *, node_count: int = 1, storage_class: str = ""
    ) -> None:
        settings = {
            "clusterName": self.cluster_name,
            "nodeCount": node_count,
            "kindNodeImage": kind_node_image(),
            **training_settings(self.job, base_image, max_steps),
        }
        document = {"config": fixture_config(self.project, settings)}
        (self.project / f"Pulumi.{self.stack}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))

    def up(self, base_image: str) -> None:
        """Run.up, while a watcher writes the cluster's kubeconfig as soon as kind has made it and records
        the time from the start of `up` to every node Ready (`ready_s`)."""
        stop = threading.Event()
        watcher = threading.Thread(target=self._watch_cluster, args=(time.monotonic(), stop), daemon=True)
        watcher.start()
        try:
            super().up(base_image)
        finally:
            stop.set()
            watcher.join(timeout=30)

    def write_kubeconfig(self) -> bool:
        """Writes the kind cluster's kubeconfig where kubectl here reads it (once); whether it is there."""
        kubeconfig = Path(self.cluster["KUBECONFIG"])
        if not kubeconfig.exists():
            got = self.sh.run(
                ["kind", "get", "kubeconfig", "--name", self.cluster_name], check=False, log=False
            )
            if got.returncode != 0:
                return False
            kubeconfig.write_text(got.stdout)
            kubeconfig.chmod(0o600)
        return True

    def _watch_cluster(self, started: float, stop: threading.Event) -> None:
        while not stop.wait(2):
            if not self.write_kubeconfig():
                continue
            nodes = self.kubectl("get", "nodes", "-o", "json", check=False, log=False)
            if nodes.returncode == 0:
                items = json.loads(nodes.stdout)["items"]
                ready = [
                    n
                    for n in items
                    if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
                ]
                if items and len(ready) == len(items):
                    self.report.data["ready_s"] = round(time.monotonic() - started, 1)
                    self.report.save()
                    return

    def running_image_ids(self, pods: list[dict[str, Any]]) -> list[str]:
        """The image ID (its config's digest, what Docker's image ID is) of what every container runs: the
        kubelet reports a loaded image by the digest of the manifest `kind load` made for it
        (`docker.io/library/import-<date>@sha256:...`), whose config the node's containerd holds."""
        ids = []
        for pod in pods:
            for status in pod.get("status", {}).get("containerStatuses", []):
                manifest = status.get("imageID", "").rsplit("@", 1)[-1]
                node = pod["spec"]["nodeName"]  # kind's node names are its containers'
                found = self.sh.run(
                    ["docker", "exec", node, "ctr", "--namespace=k8s.io", "content", "get", manifest],
                    check=False,
                    log=False,
                )
                ids.append(json.loads(found.stdout)["config"]["digest"] if found.returncode == 0 else "")
        return ids

    def host_path(self, pod_path: str) -> Path:
        """Where a file under the checkpoint claim is readable here: the stack's shared directory (several
        nodes), or a fresh copy out of the node container that holds the claim's local-path volume."""
        claim = self.kube_json("get", "pvc", f"{self.job}-checkpoints", "-n", NAMESPACE, log=False)
        volume = self.kube_json("get", "pv", claim["spec"]["volumeName"], log=False)
        node_path = (volume["spec"].get("hostPath") or volume["spec"]["local"])["path"]
        relative = pod_path.removeprefix("/mnt/checkpoints/")
        if node_path == SHARED_STORAGE_PATH:
            return kind_shared_directory(self.cluster_name) / relative
        node = f"{self.cluster_name}-control-plane"  # a 1-node kind cluster trains on its control plane
        copy = self.copies / relative
        shutil.rmtree(copy, ignore_errors=True)
        copy.unlink(missing_ok=True)
        copy.parent.mkdir(parents=True, exist_ok=True)
        self.sh.run(["docker", "cp", f"{node}:{node_path}/{relative}", str(copy)], check=False, log=False)
        return copy

    def leftovers(self, image: str) -> list[str]:
        """What of the stack is left on this machine: kind's containers, network and volumes, the image tag,
        the shared directory (the cluster itself is gone with its objects)."""
        found = []
        label = f"label={KIND_CLUSTER_LABEL}={self.cluster_name}"
        found += [
            f"container {c}" for c in self.sh.run(["docker", "ps", "-aq", "--filter", label]).stdout.split()
        ]
        found += [
            f"volume {v}"
            for v in self.sh.run(["docker", "volume", "ls", "-q", "--filter", label]).stdout.split()
        ]
        if self.sh.run(["docker", "network", "inspect", "kind"], check=False, log=False).returncode == 0:
            found.append("network kind")
        repository = image.rsplit("@", 1)[0].rsplit(":", 1)[0]
        tags = self.sh.run(
            [
                "docker",
                "image",
                "ls",
                "--filter",
                f"reference={repository}",
                "--format",
                "{{.Repository}}:{{.Tag}}",
            ]
        ).stdout.split()
        found += [f"local image {tag}" for tag in tags]
        if kind_shared_directory(self.cluster_name).exists():
            found.append(f"directory {kind_shared_directory(self.cluster_name)}")
        return found


def kind_phases(run: Run, base_image: str) -> None:
    """The dev stack on kind, then the 2-node kind stack; each stack's phases under its kind_<stack> key."""
    with run.report.phase("kind_node_image") as record:
        image = kind_node_image()
        check(image is not None, "no kind node image: run `bash scripts/e2e_toolchain.sh kind`")
        record["image"] = image
    if not run.report.data["kind_node_image"].get("ok"):
        return
    kind = KindRun(run, KIND_STACK, KIND_JOB, KIND_CLUSTER, nodes=1)
    try:
        kind.up(base_image)
        if kind.report.data["up"].get("ok"):
            kind.check_outputs()
            kind.check_training()
            with kind.report.phase("second_up"):
                kind.pulumi("up", "--yes", "--expect-no-changes", timeout=1800)
            kind.rollout()
    finally:
        kind.destroy()
    multinode = KindRun(run, MULTINODE_STACK, KIND_JOB, MULTINODE_CLUSTER, nodes=2)
    try:
        with multinode.report.phase("train") as record:
            multinode.sh.run(["pulumi", "stack", "init", MULTINODE_STACK, "--non-interactive"])
            multinode.stack_config(base_image, MULTINODE_STEPS, node_count=2)
            started = time.monotonic()
            multinode.pulumi("up", "--yes", "--skip-preview", timeout=3600)
            record["up_seconds"] = round(time.monotonic() - started, 1)
            check(multinode.write_kubeconfig(), f"kind has no cluster {MULTINODE_CLUSTER} after `up`")
            multinode.wait_complete(1800)
            hosts = sorted({p["spec"].get("nodeName", "") for p in multinode.job_pods()})
            summary_path = multinode.host_path(f"/mnt/checkpoints/{KIND_JOB}/output/summary.json")
            summary = json.loads(summary_path.read_text())
            record.update(
                hosts=hosts, final_loss=summary["final_loss"], tokens_per_sec=summary.get("tokens_per_sec")
            )
            record["reference_loss"] = reference_loss(multinode, MULTINODE_STEPS)
            check(len(hosts) == 2, f"the 2 pods ran on {hosts}")
            check(
                abs(record["final_loss"] - record["reference_loss"]) <= LOSS_TOLERANCE,
                f"final loss {record['final_loss']} vs reference {record['reference_loss']}",
            )
    finally:
        with multinode.report.phase("destroy") as record:
            image = (
                str(multinode.outputs().get("image", ""))
                if multinode.pulumi("stack", "output", check=False).returncode == 0
                else ""
            )
            multinode.pulumi("destroy", "--yes", "--skip-preview", timeout=1800)
            record["leftovers"] = leftovers = multinode.leftovers(image)
            check(not leftovers, f"left behind: {leftovers}")


def kind_run(run: Run, base_image: str | None = None) -> None:
    """The kind phases (after the test cluster's, or alone with `--only kind`: then the base image first), and
    the cleanup whatever happened."""
    try:
        kind_phases(run, base_image or run.base_image())
    finally:
        kind_cleanup()


def kind_cleanup(
    clusters: tuple[str, ...] = (KIND_CLUSTER, MULTINODE_CLUSTER), network: bool = True
) -> list[str]:
    """Removes the e2e's kind clusters (their node containers and volumes, as `kind delete cluster` does), their
    shared directories and kind's network (in use by another cluster, it stays): after the kind phases, and
    before a run, what an interrupted one left. What of them was there."""
    found = []
    for cluster in clusters:
        nodes = labelled_containers(f"{KIND_CLUSTER_LABEL}={cluster}")
        if nodes:
            found.append(f"kind cluster {cluster}")
            subprocess.run(["docker", "rm", "-f", "-v", *nodes], capture_output=True, check=False)
        if kind_shared_directory(cluster).exists():
            found.append(f"directory {kind_shared_directory(cluster)}")
            shutil.rmtree(kind_shared_directory(cluster))
    if network:
        subprocess.run(["docker", "network", "rm", "kind"], capture_output=True, check=False)
    return found
