"""Checkpoints in an S3-compatible object store under the real engine (part of `make e2e`): `object_storage`.

An S3 server (versitygw, scripts/s3_server.sh's static binary in a FROM-scratch image pushed to the test
registry) runs in the cluster in a namespace of the harness's own; a 1-node stack names it in
`checkpointS3Url`, `checkpointS3Endpoint` and `checkpointS3Secret`. As docs/stack.md tells users, the
credentials Secret is created once `pulumi up` has made the namespace, and the pods wait for it. Then:
  - the job completes and its checkpoints are in the bucket (manifests with checksums matching the objects),
    none on the claim, and `checkpointLocation` names them (`s3_checkpoint_steps`, `location`);
  - a longer run (`pulumi up` replacing the job) resumes from the bucket's newest checkpoint (`resumed_from`);
  - `pulumi destroy` leaves nothing of the stack; the bucket keeps the checkpoints (they are the user's).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.faults import for_stack, set_config, set_override
from tests.e2e.harness import check, wait_until
from tests.e2e.real_run import NAMESPACE, Run
from tests.support.s3_server import SERVER_SCRIPT, s3_client

S3_STACK = "e2e-s3"
S3_JOB = "gpt-s3"
S3_NAMESPACE = "trainstack-e2e-s3"
S3_PORT = 7070
S3_SECRET = "s3-credentials"
BUCKET = "trainstack-e2e"
PREFIX = "runs"
FIRST_STEPS = 40
SECOND_STEPS = 60
EVERY_STEPS = 20


def server_image(run: Run) -> str:
    """The S3 server's image in the test registry: the static versitygw binary, nothing else."""
    binary = Path(
        subprocess.run(
            ["bash", str(SERVER_SCRIPT)],
            capture_output=True,
            text=True,
            check=True,
            timeout=1200,
        ).stdout.split()[-1]
    )
    version = binary.parent.name.removeprefix("versitygw-")
    context = run.run_dir / "s3-image"
    context.mkdir(exist_ok=True)
    (context / "versitygw").write_bytes(binary.read_bytes())
    (context / "versitygw").chmod(0o755)
    (context / "Dockerfile").write_text(
        'FROM scratch\nCOPY versitygw /versitygw\nENTRYPOINT ["/versitygw"]\n'
    )
    tag = f"{run.cluster['REGISTRY']}/trainstack-e2e/s3:{version}"
    run.sh.run(["docker", "build", "--network", "none", "-q", "-t", tag, str(context)], timeout=600)
    run.sh.run(["docker", "push", "-q", tag], timeout=600)
    return tag


def server_objects(image: str, access_key: str, secret_key: str) -> list[dict[str, Any]]:
    """The namespace, root-credentials Secret, Deployment and Service of the in-cluster S3 server."""
    labels = {"app": "s3"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": S3_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3-root", "namespace": S3_NAMESPACE},
            "stringData": {"ROOT_ACCESS_KEY_ID": access_key, "ROOT_SECRET_ACCESS_KEY": secret_key},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "s3", "namespace": S3_NAMESPACE},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "s3",
                                "image": image,
                                "args": ["--port", f":{S3_PORT}", "--quiet", "posix", "/data"],
                                "envFrom": [{"secretRef": {"name": "s3-root"}}],
                                "ports": [{"containerPort": S3_PORT}],
                                "readinessProbe": {"tcpSocket": {"port": S3_PORT}, "periodSeconds": 2},
                                "volumeMounts": [
                                    {"name": "data", "mountPath": "/data"},
                                    {"name": "tmp", "mountPath": "/tmp"},  # FROM scratch has none
                                ],
                            }
                        ],
                        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s3", "namespace": S3_NAMESPACE},
            "spec": {"selector": labels, "ports": [{"port": S3_PORT, "targetPort": S3_PORT}]},
        },
    ]


@contextmanager
def port_forward(run: Run) -> Iterator[str]:
    """`kubectl port-forward` to the S3 Service on a free local port; yields the endpoint URL."""
    process = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            run.cluster["KUBECONFIG"],
            "port-forward",
            "-n",
            S3_NAMESPACE,
            "--address",
            "127.0.0.1",
            "service/s3",
            f":{S3_PORT}",
        ],
        env=run.sh.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
        check(match is not None, f"kubectl port-forward to the S3 server said: {line.strip()!r}")
        assert match is not None
        # kubectl reports every connection on its output: drain it so it never blocks.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def complete_checkpoints(
    s3: Any, bucket: str = BUCKET, root: str = f"{PREFIX}/{S3_JOB}/checkpoints/"
) -> dict[int, dict[str, Any]]:
    """The bucket's published checkpoints of the job: step → manifest, each file's size and sha256 checked
    against the object its manifest names (trainer/checkpoint/s3.py's layout: <tag>/manifest.json names the
    run prefix `objects` under <tag>/ that holds its files)."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=root).get("Contents") or []
    found = {}
    for item in listed:
        key = item["Key"]
        tag = re.fullmatch(re.escape(root) + r"(step_(\d+))/manifest\.json", key)
        if not tag:
            continue
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        for name, record in manifest["files"].items():
            body = s3.get_object(Bucket=bucket, Key=f"{root}{tag.group(1)}/{manifest['objects']}{name}")
            content = body["Body"].read()
            check(
                len(content) == record["bytes"] and hashlib.sha256(content).hexdigest() == record["sha256"],
                f"{key}: {name} does not match its manifest",
            )
        found[int(tag.group(2))] = manifest
    return found


@contextmanager
def s3_in_cluster(run: Run) -> Iterator[tuple[Any, str, str]]:
    """The S3 server running in the cluster with a bucket BUCKET; yields (a client through a port-forward,
    access key, secret key) and removes the server's namespace afterwards."""
    access_key, secret_key = f"e2e{secrets.token_hex(4)}", secrets.token_hex(16)
    image = server_image(run)
    objects = server_objects(image, access_key, secret_key)
    run.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(o) for o in objects))
    run.kubectl("-n", S3_NAMESPACE, "rollout", "status", "deployment/s3", "--timeout=300s", timeout=330)
    try:
        with port_forward(run) as endpoint:
            s3 = s3_client(endpoint, access_key, secret_key)
            s3.create_bucket(Bucket=BUCKET)
            yield s3, access_key, secret_key
    finally:
        run.kubectl("delete", "namespace", S3_NAMESPACE, "--wait=true", timeout=300, check=False)


def object_storage(run: Run, base_image: str) -> None:
    s3_run = for_stack(run, S3_STACK, S3_JOB)
    with run.report.phase("object_storage") as record, s3_in_cluster(run) as (s3, access_key, secret_key):
        train_on_object_storage(s3_run, base_image, s3, access_key, secret_key, record)


def use_object_store(run: Run, access_key: str, secret_key: str) -> tuple[threading.Thread, list[str]]:
    """The stack's checkpointS3* keys set to the in-cluster server, and a thread that creates their Secret
    once `pulumi up` has made the namespace (as docs/stack.md tells users); join it, then check the
    problems it lists are none."""
    set_config(run, "checkpointS3Url", f"s3://{BUCKET}/{PREFIX}")
    set_config(run, "checkpointS3Endpoint", f"http://s3.{S3_NAMESPACE}.svc.cluster.local:{S3_PORT}")
    set_config(run, "checkpointS3Secret", S3_SECRET)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": S3_SECRET, "namespace": NAMESPACE},
        "stringData": {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key},
    }
    problems: list[str] = []

    def create_secret() -> None:
        # From stdin, which commands.log does not keep.
        try:
            wait_until(
                f"namespace {NAMESPACE}",
                600,
                lambda: run.kubectl("get", "namespace", NAMESPACE, check=False, log=False).returncode == 0,
            )
            run.kubectl("apply", "-f", "-", input=json.dumps(secret))
        except AssertionError as failure:
            problems.append(f"creating the Secret {S3_SECRET}: {failure}")

    creator = threading.Thread(target=create_secret, daemon=True)
    creator.start()
    return creator, problems


def rerun_longer(run: Run, steps: int) -> None:
    """A second job: `pulumi up` with train.max_steps raised replaces the TrainJob; waits until it is Complete."""
    before = run.trainjob()
    assert before is not None
    set_override(run, "train.max_steps", steps)
    run.pulumi("up", "--yes", "--skip-preview", timeout=3600)
    after = wait_until("the longer TrainJob", 300, run.trainjob)
    check(after["metadata"]["uid"] != before["metadata"]["uid"], "the TrainJob was not replaced")
    run.wait_complete(1200, uid=after["metadata"]["uid"])


def train_on_object_storage(
    run: Run, base_image: str, s3: Any, access_key: str, secret_key: str, record: dict[str, Any]
) -> None:
    run.sh.run(["pulumi", "stack", "init", run.stack, "--non-interactive"])
    run.stack_config(base_image, FIRST_STEPS)
    set_override(run, "checkpoint.every_steps", EVERY_STEPS)
    creator, problems = use_object_store(run, access_key, secret_key)
    started = time.monotonic()
    run.pulumi("up", "--yes", "--skip-preview", timeout=3600)
    creator.join(timeout=660)
    check(not problems, "; ".join(problems))
    record["up_seconds"] = round(time.monotonic() - started, 1)
    location = run.outputs()["checkpointLocation"]
    record["location"] = location
    check(location == f"s3://{BUCKET}/{PREFIX}/{S3_JOB}/checkpoints", f"checkpointLocation is {location}")
    run.wait_complete(1200)
    record["s3_checkpoint_steps"] = sorted(complete_checkpoints(s3))
    check(
        record["s3_checkpoint_steps"] == [EVERY_STEPS, FIRST_STEPS],
        f"complete checkpoints in the bucket at {record['s3_checkpoint_steps']}",
    )
    record["claim_checkpoint_steps"] = run.checkpoint_steps()
    check(
        not record["claim_checkpoint_steps"], f"checkpoints on the claim: {record['claim_checkpoint_steps']}"
    )

    rerun_longer(run, SECOND_STEPS)
    resumed, record["resumed_from_step"] = run.resumed_from()
    record["resumed_from"] = resumed
    check(record["resumed_from_step"] == FIRST_STEPS, f"the longer job resumed from {resumed}")
    record["final_s3_checkpoint_steps"] = sorted(complete_checkpoints(s3))
    check(
        max(record["final_s3_checkpoint_steps"]) == SECOND_STEPS,
        f"complete checkpoints in the bucket at {record['final_s3_checkpoint_steps']}",
    )

    started = time.monotonic()
    run.pulumi("destroy", "--yes", "--skip-preview", timeout=1800)
    record["destroy_seconds"] = round(time.monotonic() - started, 1)
    record["leftovers"] = run.leftovers("")
    check(not record["leftovers"], f"left behind: {record['leftovers']}")
    record["bucket_kept_steps"] = sorted(complete_checkpoints(s3))
    check(record["bucket_kept_steps"] == record["final_s3_checkpoint_steps"], "destroy touched the bucket")
    run.pulumi("stack", "rm", "--yes")
