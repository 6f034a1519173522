"""Metrics: one JSON object per line in `<output_dir>/metrics.jsonl`, flushed as it is written."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from vlm_opd.io_utils import atomic_write_text


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a null marks it (and the trainer stops on NaN losses anyway)
    return value


def drop_lines_after(path: Path, step: int) -> None:
    """Remove the lines of a JSONL log whose `step` is past `step` (written after the checkpoint a run
    resumes from), so the resumed run's lines are not duplicated. No file: nothing to do."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


class MetricsLogger:
    """Append-only JSONL metrics file.

    On resume from step `s`, lines with `step > s` (written after that checkpoint by the interrupted
    run) are dropped first, so the file ends up identical to an uninterrupted run's.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            atomic_write_text(self.path, "")
        else:
            drop_lines_after(self.path, resume_step)
        self._fh = open(self.path, "a", encoding="utf-8")

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self.enabled and not self._fh.closed:
            self._fh.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
