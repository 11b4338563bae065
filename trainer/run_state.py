"""output.dir/run_state.json: what a run remembers across restarts (starts, MLflow run); rank 0, locked."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from trainer.metrics import warn
from trainer.shared_files import write_replacing

RUN_STATE_FILE = "run_state.json"


class RunState:
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
        """One more start recorded; returns the restarts seen."""
        restarts = int(self.get("starts", 0))
        self.update(starts=restarts + 1)
        return restarts
