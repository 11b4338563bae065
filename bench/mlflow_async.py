"""What MLflow's own async logging (MlflowClient.log_batch(..., synchronous=False)) would leave on the training
thread, against trainer/tracking.py's queue thread (docs/benchmarks.md, "MLflow async logging").

    .venv/bin/python bench/mlflow_async.py

Prints: the import of mlflow and the creation of a SQLite store and run (synchronous: MLflow has no async
form of them), a log_batch synchronous and enqueued, and what an unreachable tracking server prints for five
enqueued batches (MLflow logs one ERROR line per failed batch).
"""

from __future__ import annotations

import os
import tempfile
import time


def main() -> None:
    directory = tempfile.mkdtemp(prefix="mlflow-async-")
    began = time.perf_counter()
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    imported = time.perf_counter() - began
    began = time.perf_counter()
    client = MlflowClient(tracking_uri=f"sqlite:///{directory}/mlflow.db")
    run = client.create_run(client.create_experiment("bench", artifact_location=f"file://{directory}/a"))
    opened = time.perf_counter() - began
    timings = {}
    for synchronous in (True, False):
        began = time.perf_counter()
        for step in range(20):
            metric = Metric("loss", 1.0, 0, step)
            client.log_batch(run.info.run_id, metrics=[metric], synchronous=synchronous)
        timings[synchronous] = (time.perf_counter() - began) / 20 * 1000
    print(f"import mlflow {imported:.2f} s; SQLite store and run created {opened:.2f} s; log_batch "
          f"{timings[True]:.1f} ms synchronous, {timings[False]:.2f} ms enqueued")  # fmt: skip
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="2")
    unreachable = MlflowClient(tracking_uri="http://127.0.0.1:9")
    pending = [
        unreachable.log_batch("0" * 32, metrics=[Metric("loss", 1.0, 0, step)], synchronous=False)
        for step in range(5)
    ]
    for operation in pending:
        try:
            assert operation is not None  # synchronous=False returns the operation
            operation.wait()
        except Exception as error:  # each one is also an ERROR line from MLflow's logger
            print(f"batch failed: {type(error).__name__}")


if __name__ == "__main__":
    main()
