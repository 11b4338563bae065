"""What a run remembers across its restarts, beside its metrics: output.dir/run_state.json.

    {"starts": 3, "mlflow": {"tracking_uri": "sqlite:///...", "run_id": "9f2c..."}}

`starts` counts the processes that started this run (restarts seen = starts - 1); `mlflow` names the MLflow
run a resumed run continues. Only rank 0 reads and writes it (shared_files.write_replacing), under a lock:
the tracking thread updates it too.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from trainer.metrics import warn
from trainer.shared_files import write_replacing

RUN_STATE_FILE = "run_state.json"


class RunState:
    """output.dir/run_state.json: read once, updated atomically."""

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir).expanduser() / RUN_STATE_FILE
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            loaded = {}
        except (OSError, ValueError) as error:
            # A damaged state file costs the restart count and the MLflow run id, never the training run.
            warn(f"ignoring unreadable {self.path}: {error}")
            loaded = {}
        if isinstance(loaded, dict):
            self._values = loaded

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._values.get(key, default)

    def update(self, **values: Any) -> None:
        with self._lock:
            self._values.update(values)
            text = json.dumps(self._values, indent=1, sort_keys=True) + "\n"
            write_replacing(self.path, text.encode("utf-8"))

    def count_start(self) -> int:
        """Records one more start of this run; the number of earlier starts (restarts seen)."""
        restarts = int(self.get("starts", 0))
        self.update(starts=restarts + 1)
        return restarts
