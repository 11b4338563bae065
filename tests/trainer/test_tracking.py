"""trainer.tracking: what a training run logs to MLflow, against a real MLflow SQLite store (the default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.tracking import default_tracking_uri, flatten, split_record

from .conftest import TINY_CONFIG, metrics, run, run_overrides, trainer_command


def test_records_split_into_metrics_and_tags() -> None:
    step, numbers, texts = split_record(
        {"event": "train", "step": 10, "loss": 3.5, "lr": 1e-3, "mfu": None, "grad_norm": float("nan")}
    )
    assert (step, numbers, texts) == (10, {"loss": 3.5, "lr": 1e-3}, {})
    step, numbers, texts = split_record(
        {
            "event": "start",
            "step": 0,
            "world_size": 2,
            "device": "cpu",
            "compiled": False,
            "resumed_from": None,
        }
    )
    assert numbers == {"start.world_size": 2.0}
    assert texts == {"start.device": "cpu", "start.compiled": "false"}


def test_config_is_flattened_to_dotted_params() -> None:
    assert flatten({"model": {"n_layer": 2, "n_head": None}, "train": {"lr": 0.001}}) == {
        "model.n_layer": "2",
        "model.n_head": "null",
        "train.lr": "0.001",
    }


def test_default_store_is_sqlite_under_output_dir(tmp_path: Path) -> None:
    assert default_tracking_uri(tmp_path / "out") == f"sqlite:///{tmp_path}/out/mlflow/mlflow.db"


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_mlflow_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    settings = {"output__tracking": "mlflow", "checkpoint__every_steps": 10, "train__eval_every": 10}
    first = run(
        trainer_command("train", TINY_CONFIG, run_overrides(tmp_path, train__max_steps=20, **settings))
    )
    assert first.returncode == 0, first.stderr
    # A resume that changes a key: MLflow params cannot change, so the new value becomes a tag.
    second = run(
        trainer_command("train", TINY_CONFIG, run_overrides(tmp_path, train__max_steps=40, **settings))
    )
    assert second.returncode == 0, second.stderr
    assert "warning: MLflow" not in first.stderr + second.stderr

    client = MlflowClient(default_tracking_uri(tmp_path / "output"))
    experiment = client.get_experiment_by_name("trainstack")
    assert experiment is not None
    [mlflow_run] = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["train.max_steps"] == "20"  # as the run started
    assert mlflow_run.data.tags["config.train.max_steps"].startswith("40 (from step 20")
    assert (
        mlflow_run.data.params["model.n_layer"] == "2"
        and mlflow_run.data.params["output.tracking"] == "mlflow"
    )
    # Every loss the trainer wrote, across both processes, at its step, in one history.
    written = {m["step"]: m["loss"] for m in metrics(tmp_path) if m["event"] == "train"}
    history = {m.step: m.value for m in client.get_metric_history(mlflow_run.info.run_id, "loss")}
    assert history == pytest.approx(written) and max(history) == 40
    assert sorted(m.step for m in client.get_metric_history(mlflow_run.info.run_id, "val_loss")) == [
        10,
        20,
        30,
        40,
    ]
    artifacts = {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}
    assert {"summary.json", "loss.png", "config"} <= artifacts
    configs = {a.path for a in client.list_artifacts(mlflow_run.info.run_id, "config")}
    assert configs == {"config/start_step_000000.yaml", "config/start_step_000020.yaml"}
    # The artifacts are the run's files, beside the store.
    local = Path(client.download_artifacts(mlflow_run.info.run_id, "summary.json", str(tmp_path)))
    assert local.read_text() == (tmp_path / "output" / "summary.json").read_text()
