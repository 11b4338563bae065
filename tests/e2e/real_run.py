"""Our own `pulumi up` → train → `pulumi destroy`, with the real CLI and providers, on a real cluster.

What it proves (each a phase of runs/e2e/report.json, which it writes after every phase):
  - the toolchain's versions (`versions`), and the test cluster (tests/e2e/cluster/) starting (`cluster`);
  - `pulumi preview`, then `pulumi up --yes` of a fresh stack (`clusterKind: existing` on that cluster, the
    image built by pulumi-docker and pushed to the cluster's local registry) on a throwaway `file://` backend
    (`up`, `first_step_s` = start of `up` to the first logged training step; its critical path under
    `timeline.up`, tests/e2e/timing.py);
  - every output present, `kubeconfig` secret (`outputs`); `podNames` equal to what kubectl lists
    (`pods_match`); the pods run the image the stack built and pushed (`image`);
  - the TrainJob completes (`trainjob_complete`), the checkpoints named by `checkpointLocation` exist with
    their manifests (`final_step`, `checkpoint_steps`); `logsCommand` shows the training log (`logs_command`);
  - `pulumi preview --expect-no-changes` right after (`idempotent`);
  - a trainer code change + `pulumi up` rebuilds the image, replaces the job, and the new job resumes from the
    claim (`rollout`; `up` to the new job's first step under `timeline.rollout`);
  - `pulumi destroy --yes` leaves nothing of the stack in the cluster or the registry (`destroy`), and
    `pulumi stack rm` (`stack_rm`).
`python -m tests.e2e` (`make e2e`) runs these phases, then tests/e2e/faults.py's, then tests/e2e/object_storage.py's.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.harness import (
    CACHE,
    CLUSTER_SCRIPTS,
    E2E_CLUSTER,
    REPO_ROOT,
    E2EFailure,
    Report,
    Shell,
    check,
    project_copy,
    read_env_file,
    toolchain_env,
    wait_until,
)
from tests.support.stack_helpers import STACK_OUTPUTS
from trainer.checkpoint.layout import TAG_PATTERN

STACK = "e2e"
JOB = "gpt-e2e"
NAMESPACE = "trainstack-e2e"
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
# Small enough to finish in minutes on 2 shared cores, with several checkpoints on the way.
MAX_STEPS = 60
ROLLOUT_MAX_STEPS = 80
EVERY_STEPS = 20
# What a node's image pull says when the disk is full (containerd's write error, passed on by the kubelet).
NO_SPACE = "no space left on device"


def training_settings(job: str, base_image: str, max_steps: int) -> dict[str, Any]:
    """What every end-to-end stack sets besides its cluster: the job, the local Trainer chart (no internet),
    the CPU base image, a short training with checkpoints on the way, and small pods."""
    chart = CACHE / "charts" / "kubeflow-trainer-2.3.0"
    values = (CACHE / "charts" / "kubeflow-trainer-2.3.0.values.yaml").read_text()
    return {
        "namespace": NAMESPACE,
        "trainJobName": job,
        "trainerChart": str(chart),
        "trainerChartValues": json.dumps(yaml.safe_load(values)),
        "baseImage": base_image,
        "imageBuildArgs": ["BAKE_TOKENIZER=0"],
        "trainingOverrides": [
            f"train.max_steps={max_steps}",
            f"checkpoint.every_steps={EVERY_STEPS}",
            "train.eval_every=20",
            "output.log_every=5",
        ],
        "cpuPerNode": "500m",
        "memoryPerNode": "3Gi",
        "checkpointStorageSize": "1Gi",
        "podNamesTimeoutSeconds": 600,
    }


class Run:
    """One end-to-end run: the cluster, the project copy, the stack, and the report."""

    # The stack pushes its image: pods run the `image` output (a registry digest). Unpushed (kind), pods run
    # its tag and the output pins it to the local image ID (components/trainer_image.py, `pinned`).
    pushed = True

    def __init__(self, run_dir: Path, nodes: int, stack: str = STACK, job: str = JOB) -> None:
        self.run_dir = run_dir
        self.stack = stack
        self.job = job
        self.nodes = nodes
        self.report = Report()
        self.project = project_copy(run_dir / "project")
        self.sh = Shell(run_dir, toolchain_env(run_dir), cwd=self.project)
        self.cluster_env: dict[str, str] = {
            "E2E_CLUSTER": E2E_CLUSTER,
            "E2E_NODES": str(nodes),
            "E2E_STATE": str(run_dir / "cluster"),
            "TRAINSTACK_E2E_CACHE": str(CACHE),
        }
        self.cluster: dict[str, str] = {}

    # --- helpers ----------------------------------------------------------------------------------------

    def pulumi(self, *args: str, timeout: float = 1800, check: bool = True, input: str | None = None) -> Any:
        return self.sh.run(
            ["pulumi", *args, "--stack", self.stack, "--non-interactive"],
            timeout=timeout,
            check=check,
            input=input,
        )

    def kubectl(
        self, *args: str, timeout: float = 120, check: bool = True, input: str | None = None, log: bool = True
    ) -> Any:
        return self.sh.run(
            ["kubectl", "--kubeconfig", self.cluster["KUBECONFIG"], *args],
            timeout=timeout,
            check=check,
            input=input,
            log=log,
        )

    def kube_json(self, *args: str, log: bool = True) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json", log=log).stdout)

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.pulumi("stack", "output", "--json").stdout)

    def job_pods(self, log: bool = True) -> list[dict[str, Any]]:
        selector = f"{JOBSET_LABEL}={self.job}"
        return self.kube_json("get", "pods", "-n", NAMESPACE, "-l", selector, log=log)["items"]

    def trainjob(self) -> dict[str, Any] | None:
        found = self.kubectl("get", "trainjob", self.job, "-n", NAMESPACE, "-o", "json", check=False)
        return json.loads(found.stdout) if found.returncode == 0 else None

    def host_path(self, pod_path: str) -> Path:
        """Where a path under the checkpoint claim's mount lies on this machine (the shared directory)."""
        claim = self.kube_json("get", "pvc", f"{self.job}-checkpoints", "-n", NAMESPACE)
        volume = self.kube_json("get", "pv", claim["spec"]["volumeName"])
        node_path = volume["spec"]["hostPath"]["path"]
        shared = node_path.split("/shared/", 1)[1]
        return Path(self.cluster["SHARED_DIR"]) / shared / pod_path.removeprefix("/mnt/checkpoints/")

    def metrics(self) -> list[dict[str, Any]]:
        path = self.host_path(f"/mnt/checkpoints/{self.job}/output/metrics.jsonl")
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def starts(self) -> list[dict[str, Any]]:
        """The job's `start` events, oldest first: one each time a trainer started on this claim."""
        return [m for m in self.metrics() if m.get("event") == "start"]

    def resumed_from(self) -> tuple[str | None, int | None]:
        """The newest start's `resumed_from` (a checkpoint tag, step_<step>) and its step; None for either
        when no start is recorded or it resumed nothing."""
        starts = self.starts()
        tag = starts[-1].get("resumed_from") if starts else None
        match = TAG_PATTERN.match(str(tag))
        return tag, int(match.group(1)) if match else None

    def checkpoint_steps(self) -> list[int]:
        root = self.host_path(f"/mnt/checkpoints/{self.job}/checkpoints")
        steps = []
        for manifest in root.glob("step_*/manifest.json"):
            steps.append(int(json.loads(manifest.read_text())["step"]))
        return sorted(steps)

    def pod_states(self, log: bool = True) -> list[str]:
        """One line per pod of the job: name, node, phase, and each container's waiting or ended reason."""
        lines = []
        for pod in self.job_pods(log=log):
            status = pod.get("status", {})
            line = f"{pod['metadata']['name']} on {pod['spec'].get('nodeName') or '-'}: {status.get('phase')}"
            if status.get("reason"):
                line += f" ({status['reason']}: {status.get('message', '')[:200]})"
            for container in status.get("containerStatuses") or []:
                for state, detail in (container.get("state") or {}).items():
                    if state != "running":
                        reason = detail.get("reason", state)
                        line += f"; {container['name']} {reason}: {detail.get('message', '')[:300]}"
            lines.append(line)
        return lines

    def wait_complete(self, seconds: float, uid: str | None = None) -> dict[str, Any]:
        """The TrainJob once Complete; E2EFailure when it fails, when a pod cannot ever start for lack of disk,
        or after `seconds`, with every pod's state."""

        def complete() -> dict[str, Any] | None:
            job = self.trainjob()
            if job is None or (uid and job["metadata"]["uid"] != uid):
                return None
            conditions = {c["type"]: c["status"] for c in job.get("status", {}).get("conditions", [])}
            if conditions.get("Failed") == "True":
                raise E2EFailure(f"TrainJob {self.job} failed: {job['status']}")
            if conditions.get("Complete") == "True":
                return job
            full = [state for state in self.pod_states(log=False) if NO_SPACE in state]
            check(not full, f"TrainJob {self.job} cannot start: {full}")
            return None

        def pods() -> str:
            return f"its pods: {self.pod_states() or 'none'}"

        return wait_until(f"TrainJob {self.job} Complete", seconds, complete, interval=5, seen=pods)

    def stack_config(
        self, base_image: str, max_steps: int, *, node_count: int = 1, storage_class: str = ""
    ) -> None:
        config = {
            "clusterKind": "existing",
            "clusterName": "trainstack-e2e",
            "nodeCount": node_count,
            "checkpointStorageClass": storage_class,
            "imagePush": True,
            "imageRepository": f"{self.cluster['REGISTRY']}/trainstack/trainer",
            "trainingPreset": "tiny",
            **training_settings(self.job, base_image, max_steps),
        }
        document = {"config": {f"trainstack:{key}": value for key, value in config.items()}}
        (self.project / f"Pulumi.{self.stack}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        kubeconfig = Path(self.cluster["KUBECONFIG"]).read_text()
        # From stdin (pulumi reads a value it is not given there), so it shows in no process list.
        self.pulumi("config", "set", "--secret", "kubeconfig", input=kubeconfig)

    # --- phases -----------------------------------------------------------------------------------------

    def versions(self) -> None:
        with self.report.phase("versions") as record:
            version = self.sh.run(["pulumi", "version"]).stdout.strip()
            plugins = {}
            for name in ("kubernetes", "command", "docker"):
                binary = CACHE / "bin" / f"pulumi-resource-{name}"
                plugins[name] = binary.resolve().parent.parent.name
            kubectl = self.sh.run(["kubectl", "version", "--client", "-o", "json"]).stdout
            record.update(
                pulumi_cli=version,
                providers=plugins,
                kubernetes=json.loads(kubectl)["clientVersion"]["gitVersion"],
                sdks={
                    line.split("==")[0]: line.split("==")[1]
                    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
                    if "==" in line and not line.startswith("#")
                },
            )

    def start_cluster(self) -> None:
        with self.report.phase("cluster") as record:
            self.sh.run(["bash", str(CLUSTER_SCRIPTS / "down.sh")], env=self.cluster_env, timeout=300)
            self.sh.run(["bash", str(CLUSTER_SCRIPTS / "up.sh")], env=self.cluster_env, timeout=900)
            self.cluster = read_env_file(Path(self.cluster_env["E2E_STATE"]) / "cluster.env")
            nodes = self.kube_json("get", "nodes")["items"]
            record.update(
                nodes=[n["metadata"]["name"] for n in nodes],
                kubelet=nodes[0]["status"]["nodeInfo"]["kubeletVersion"],
                registry=self.cluster["REGISTRY"],
                storage_class=self.cluster["STORAGE_CLASS"],
            )

    def base_image(self) -> str:
        with self.report.phase("base_image") as record:
            tag = self.sh.run(
                [str(REPO_ROOT / ".venv" / "bin" / "python"), "-m", "tests.support.docker_base_image"],
                cwd=REPO_ROOT,
                timeout=3600,
            ).stdout.split()[-1]
            record["tag"] = tag
            return tag
        raise E2EFailure("no base image")  # reached only when the phase failed

    def up(self, base_image: str) -> None:
        from tests.e2e.timing import UpTimeline  # it builds on this module

        with self.report.phase("stack"):
            self.sh.run(["pulumi", "stack", "init", self.stack, "--non-interactive"])
            self.stack_config(base_image, MAX_STEPS)
        with self.report.phase("preview") as record:
            preview = self.pulumi("preview", "--diff")
            record["creates"] = len(re.findall(r"^\s*\+ ", preview.stdout, flags=re.M))
        first_step: dict[str, float] = {}
        started = time.monotonic()
        watcher = threading.Thread(target=self._watch_first_step, args=(started, first_step), daemon=True)
        watcher.start()
        with UpTimeline(self, "up") as timed, self.report.phase("up") as record:
            self.pulumi("up", "--yes", "--skip-preview", *timed.args, timeout=3600)
            record["seconds"] = round(time.monotonic() - started, 1)
        watcher.join(timeout=900)
        self.report.data["first_step_s"] = first_step.get("seconds")
        self.report.save()

    def _watch_first_step(self, started: float, result: dict[str, float]) -> None:
        """Polls the job's pods' logs until a training step shows (or 30 minutes pass)."""
        while time.monotonic() - started < 1800:
            if self.cluster:
                logs = self.kubectl(
                    "logs",
                    "-n",
                    NAMESPACE,
                    "-l",
                    f"{JOBSET_LABEL}={self.job}",
                    "--tail=-1",
                    check=False,
                    log=False,
                ).stdout
                if '"event": "train"' in logs:
                    result["seconds"] = round(time.monotonic() - started, 1)
                    return
            time.sleep(2)

    def check_outputs(self) -> None:
        with self.report.phase("outputs") as record:
            outputs = self.outputs()
            missing = [key for key in STACK_OUTPUTS if key not in outputs]
            check(not missing, f"outputs missing: {missing}")
            check(outputs["kubeconfig"] == "[secret]", "the kubeconfig output is not secret")
            record["values"] = {key: value for key, value in outputs.items() if key != "kubeconfig"}
        with self.report.phase("pods") as record:
            listed = sorted(p["metadata"]["name"] for p in self.job_pods())
            record.update(pod_names=outputs.get("podNames"), kubectl=listed)
            self.report.data["pods_match"] = sorted(outputs.get("podNames") or []) == listed
            check(self.report.data["pods_match"], f"podNames {outputs.get('podNames')} != kubectl's {listed}")
        with self.report.phase("image") as record:
            image = str(outputs.get("image"))
            pods = self.job_pods()
            record["stack_image"] = image
            record["pod_images"] = sorted({c["image"] for p in pods for c in p["spec"]["containers"]})
            reference, digest = image.rsplit("@", 1)
            expected = image if self.pushed else reference
            check(
                record["pod_images"] == [expected],
                f"pods run {record['pod_images']}, the stack built {image}",
            )
            running = self.running_image_ids(pods)
            record["pod_image_ids"] = running
            check(all(i.endswith(digest) for i in running), f"pods' image IDs {running} are not {digest}")

    def running_image_ids(self, pods: list[dict[str, Any]]) -> list[str]:
        """The image every container of pods runs, as the kubelet reports it (pulled: the registry digest)."""
        return [s.get("imageID", "") for p in pods for s in p.get("status", {}).get("containerStatuses", [])]

    def check_training(self) -> None:
        with self.report.phase("trainjob") as record:
            self.report.data["trainjob_complete"] = False
            job = self.wait_complete(1200)
            record["conditions"] = job["status"].get("conditions")
            self.report.data["trainjob_complete"] = True
            # The progress rank 0 reports through Trainer's status server (trainJobProgress, on by default).
            progress = job["status"].get("trainerStatus") or {}
            metrics = {m["name"]: m["value"] for m in progress.get("metrics") or []}
            record["trainer_status"] = {"progressPercentage": progress.get("progressPercentage"), **metrics}
            check(
                progress.get("progressPercentage") == 100 and metrics.get("step") == str(MAX_STEPS),
                f"status.trainerStatus does not show the finished job: {progress}",
            )
        with self.report.phase("checkpoints") as record:
            steps = self.checkpoint_steps()
            record["steps"] = steps
            self.report.data["checkpoint_steps"] = steps
            summary_path = self.host_path(f"/mnt/checkpoints/{self.job}/output/summary.json")
            summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
            final = summary.get("final_step")
            self.report.data["training_rate"] = {"tokens_per_sec": summary.get("tokens_per_sec"), "nodes": 1}
            self.report.data["final_step"] = final
            check(final == MAX_STEPS, f"summary says final step {final}, expected {MAX_STEPS}")
            expected = list(range(EVERY_STEPS, MAX_STEPS + 1, EVERY_STEPS))[-2:]  # keep_last: 2
            check(steps == expected, f"complete checkpoints at {steps}, expected {expected}")
        with self.report.phase("logs_command") as record:
            command = self.outputs()["logsCommand"]
            result = self.sh.run(["bash", "-c", f"timeout 120 {command}"], timeout=180)
            lines = [line for line in result.stdout.splitlines() if '"event": "train"' in line]
            record.update(command=command, train_lines=len(lines))
            check(bool(lines), "logsCommand printed no training step")
        with self.report.phase("idempotence"):
            self.report.data["idempotent"] = False
            self.pulumi("preview", "--expect-no-changes")
            self.report.data["idempotent"] = True

    def rollout(self) -> None:
        from tests.e2e.timing import UpTimeline  # it builds on this module

        with self.report.phase("rollout") as record:
            before = self.trainjob()
            image_before = self.outputs()["image"]
            check(before is not None, "no TrainJob before the rollout")
            assert before is not None
            source = self.project / "trainer" / "__init__.py"
            source.write_text(source.read_text() + "\n# e2e rollout: a code change\n")
            config_file = self.project / f"Pulumi.{self.stack}.yaml"
            document = yaml.safe_load(config_file.read_text())
            document["config"]["trainstack:trainingOverrides"][0] = f"train.max_steps={ROLLOUT_MAX_STEPS}"
            config_file.write_text(yaml.safe_dump(document, sort_keys=False))
            started = time.monotonic()
            with UpTimeline(self, "rollout") as timed:
                self.pulumi("up", "--yes", "--skip-preview", *timed.args, timeout=3600)
                record["up_seconds"] = round(time.monotonic() - started, 1)
            image_after = self.outputs()["image"]
            check(image_after != image_before, f"the image did not change: {image_after}")
            after = wait_until("the new TrainJob", 300, self.trainjob)
            check(after["metadata"]["uid"] != before["metadata"]["uid"], "the TrainJob was not replaced")
            self.wait_complete(1200, uid=after["metadata"]["uid"])
            resumed, record["resumed_from_step"] = self.resumed_from()
            record.update(image_before=image_before, image_after=image_after, resumed_from=resumed)
            check(record["resumed_from_step"] == MAX_STEPS, f"the new job resumed from {resumed}")
            record["final_step"] = max(self.checkpoint_steps() or [0])
            check(record["final_step"] == ROLLOUT_MAX_STEPS, f"final checkpoint {record['final_step']}")

    def destroy(self) -> None:
        with self.report.phase("destroy") as record:
            image = str(self.outputs().get("image", ""))
            started = time.monotonic()
            self.pulumi("destroy", "--yes", "--skip-preview", timeout=1800)
            record["seconds"] = round(time.monotonic() - started, 1)
            record["leftovers"] = leftovers = self.leftovers(image)
            check(not leftovers, f"left behind: {leftovers}")
        with self.report.phase("stack_rm"):
            self.pulumi("stack", "rm", "--yes")

    def leftovers(self, image: str) -> list[str]:
        """What of the stack is still in the cluster, the registry or this host's Docker engine."""
        found = []
        for namespace in (NAMESPACE, "kubeflow-system"):
            if self.kubectl("get", "namespace", namespace, check=False).returncode == 0:
                found.append(f"namespace/{namespace}")
        crds = self.kubectl("get", "crd", "-o", "name").stdout.split()
        found += [crd for crd in crds if "kubeflow.org" in crd or "jobset" in crd]
        cluster_scoped = self.kubectl(
            "get",
            "clusterrole,clusterrolebinding,validatingwebhookconfiguration,"
            "mutatingwebhookconfiguration,priorityclass,pv",
            "-o",
            "name",
        ).stdout.split()
        found += [name for name in cluster_scoped if re.search(r"trainer|jobset|trainstack", name)]
        registry = self.cluster["REGISTRY"]
        catalog = self.sh.run(
            ["curl", "-sf", f"http://{registry}/v2/trainstack/trainer/tags/list"], check=False
        )
        if catalog.returncode == 0 and (json.loads(catalog.stdout).get("tags") or []):
            found.append(f"registry tags: {json.loads(catalog.stdout)['tags']}")
        # The stack's untag command removes the image's tag from this (the building) host's engine too.
        local = self.sh.run(
            [
                "docker",
                "image",
                "ls",
                "--filter",
                f"reference={registry}/trainstack/trainer",
                "--format",
                "{{.Repository}}:{{.Tag}}",
            ]
        ).stdout.split()
        found += [f"local image {name}" for name in local]
        return found

    def stop_cluster(self, keep: bool) -> None:
        if keep:
            print(f"e2e: cluster kept: KUBECONFIG={self.cluster.get('KUBECONFIG')}")
            return
        self.sh.run(
            ["bash", str(CLUSTER_SCRIPTS / "logs.sh"), str(self.run_dir / "node-logs")],
            env=self.cluster_env,
            check=False,
        )
        self.sh.run(
            ["bash", str(CLUSTER_SCRIPTS / "down.sh")], env=self.cluster_env, check=False, timeout=300
        )
