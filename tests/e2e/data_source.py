"""Training from the user's data under the real engine (part of `make e2e`): `data`.

A corpus (the bundled sample's plays as *.txt, and one JSONL file) is uploaded to the in-cluster S3 server
(tests/e2e/object_storage.py's), and a 1-node stack names it in `dataSource` (s3://, read with the checkpoint
store's Secret). Then:
  - the job's launcher prepares it once into token shards on the claim (/mnt/checkpoints/tokens/tokens-<key>,
    a manifest naming the bucket's objects) and the job trains on it (`source`, `tokens`, `tokenized_first`);
  - a second job (`pulumi up` replacing the TrainJob) finds the shards and tokenizes nothing: its launcher
    says so, and the prepared files are the same files (`tokenized_second`, `reused`).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from tests.e2e.faults import for_stack, set_config, set_override
from tests.e2e.harness import check
from tests.e2e.object_storage import BUCKET, rerun_longer, s3_in_cluster, use_object_store
from tests.e2e.real_run import NAMESPACE, Run

DATA_STACK = "e2e-data"
DATA_JOB = "gpt-data"
CORPUS = "corpus"
FIRST_STEPS = 20
SECOND_STEPS = 30
SAMPLE = Path(__file__).resolve().parents[2] / "trainer" / "data"
# The launcher's line (trainer/prepare.py report): "prepared DIR: N tokens in S shard(s) from SOURCE (K
# tokenized now, ...".
PREPARED = re.compile(r"prepared (\S+): (\d+) tokens in (\d+) shard\(s\) from (.+) \((\d+) tokenized now")


def upload_corpus(s3: Any) -> int:
    """The plays as text objects and their first lines as a JSONL one; the number of objects."""
    plays = sorted(SAMPLE.glob("*.txt"))
    for play in plays:
        s3.put_object(Bucket=BUCKET, Key=f"{CORPUS}/{play.name}", Body=play.read_bytes())
    lines = [json.dumps({"text": line}) for line in plays[0].read_text().splitlines()[:200] if line.strip()]
    s3.put_object(Bucket=BUCKET, Key=f"{CORPUS}/lines.jsonl", Body="\n".join(lines).encode())
    return len(plays) + 1


def prepared_line(run: Run) -> re.Match[str]:
    """The launcher's preparation line in the job's node pod log."""
    pods = run.job_pods()
    check(len(pods) == 1, f"pods of {run.job}: {[p['metadata']['name'] for p in pods]}")
    log = run.kubectl("logs", "-n", NAMESPACE, pods[0]["metadata"]["name"], "-c", "node").stdout
    found = PREPARED.search(log)
    check(found is not None, f"no preparation line in the log of {pods[0]['metadata']['name']}")
    assert found is not None
    return found


def prepared_files(run: Run) -> dict[str, int]:
    """Each file of the claim's prepared directories (tokens-<key>/...) and its inode."""
    root = run.host_path("/mnt/checkpoints/tokens")
    return {str(p.relative_to(root)): p.stat().st_ino for p in sorted(root.rglob("*")) if p.is_file()}


def data_source(run: Run, base_image: str) -> None:
    data_run = for_stack(run, DATA_STACK, DATA_JOB)
    with run.report.phase("data") as record, s3_in_cluster(run) as (s3, access_key, secret_key):
        train_from_the_bucket(data_run, base_image, s3, access_key, secret_key, record)


def train_from_the_bucket(
    run: Run, base_image: str, s3: Any, access_key: str, secret_key: str, record: dict[str, Any]
) -> None:
    objects = upload_corpus(s3)
    run.sh.run(["pulumi", "stack", "init", run.stack, "--non-interactive"])
    run.stack_config(base_image, FIRST_STEPS)
    set_override(run, "checkpoint.every_steps", 10)
    set_config(run, "dataSource", f"s3://{BUCKET}/{CORPUS}")
    creator, problems = use_object_store(run, access_key, secret_key)
    started = time.monotonic()
    run.pulumi("up", "--yes", "--skip-preview", timeout=3600)
    creator.join(timeout=660)
    check(not problems, "; ".join(problems))
    run.wait_complete(1200)
    record["first_job_seconds"] = round(time.monotonic() - started, 1)
    first = prepared_line(run)
    record["source"], record["tokens"] = first.group(4), int(first.group(2))
    record["shards"], record["tokenized_first"] = int(first.group(3)), int(first.group(5))
    check(
        record["source"] == f"{objects} object(s) at s3://{BUCKET}/{CORPUS}", f"prepared {record['source']}"
    )
    check(record["tokenized_first"] == record["shards"] == objects, f"first preparation: {first.group(0)}")
    start = run.starts()[-1]
    check(start["data"] == record["source"], f"the job trained on {start['data']}")
    files = prepared_files(run)
    manifests = [name for name in files if name.endswith("/manifest.json")]
    check(len(manifests) == 1, f"prepared directories on the claim: {manifests}")

    rerun_longer(run, SECOND_STEPS)
    second = prepared_line(run)
    record["tokenized_second"] = int(second.group(5))
    check(record["tokenized_second"] == 0, f"the second job prepared again: {second.group(0)}")
    record["reused"] = prepared_files(run) == files
    check(record["reused"], "the prepared files changed under the second job")
    check(run.starts()[-1]["data"] == record["source"], "the second job trained on other data")

    run.pulumi("destroy", "--yes", "--skip-preview", timeout=1800)
    record["leftovers"] = run.leftovers("")
    check(not record["leftovers"], f"left behind: {record['leftovers']}")
    run.pulumi("stack", "rm", "--yes")
