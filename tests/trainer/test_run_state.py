"""trainer.run_state: output.dir/run_state.json counts a run's starts and is replaced whole on each update."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.run_state import RunState


def test_starts_are_counted_across_processes_and_the_file_is_replaced_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.run_state as run_state

    replaced: list[Path] = []

    real = run_state.write_replacing

    def recorded(path: Path, data: bytes) -> None:
        replaced.append(path)
        real(path, data)

    monkeypatch.setattr(run_state, "write_replacing", recorded)
    output = tmp_path / "out" / "nested"  # created on the first update
    assert RunState(output).count_start() == 0
    state = RunState(output)  # a restarted process
    assert state.count_start() == 1
    state.update(mlflow={"run_id": "9f2c"})
    assert json.loads((output / "run_state.json").read_text()) == {"mlflow": {"run_id": "9f2c"}, "starts": 2}
    assert replaced == [output / "run_state.json"] * 3 and sorted(p.name for p in output.iterdir()) == [
        "run_state.json"
    ]


@pytest.mark.parametrize("text", ["{cut", "[1, 2]"])
def test_an_unreadable_state_costs_the_count_not_the_run(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "run_state.json").write_text(text)
    assert RunState(tmp_path).count_start() == 0
    assert RunState(tmp_path).get("starts") == 1
    assert ("warning: ignoring unreadable" in capsys.readouterr().err) == (text == "{cut")
