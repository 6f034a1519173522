"""The best checkpoint of a run by its in-training eval metric, kept besides the last `keep_last`.

The papers report "each method with its best checkpoint" (VA-OPD, Table 1 caption). The trainer
therefore compares every periodic eval (steps >= 1; the step-0 eval of the initial student is not a
candidate) on `eval.best_metric` (a key of the eval lines in metrics.jsonl, e.g. `eval/accuracy`) in
direction `eval.best_mode`. When an eval improves on the best so far, that step's checkpoint is written
(also between `checkpoint_every` saves) and `<output_dir>/best.json` names it:

    {"metric": "eval/accuracy", "mode": "max", "step": 200, "value": 0.53,
     "checkpoint": "checkpoints/step-000200"}

`checkpoint` is relative to the output dir; it is "final" when the last eval (the final model's) is the
best. Every eval's value is in metrics.jsonl. `prune_checkpoints` never deletes the checkpoint best.json names. Ties keep the earlier step.

The file is written after the checkpoint it names is complete, so a crash leaves best.json pointing at
the previous best, which still exists (it is only pruned after best.json moved on).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vlm_opd.io_utils import atomic_write_json

BEST_FILE = "best.json"
# What `train.evaluate.evaluate_student` returns, as logged in metrics.jsonl ("eval/" + key).
EVAL_METRICS = ("eval/accuracy", "eval/mean_va", "eval/top10_va_share", "eval/completion_len")
VA_METRICS = ("eval/mean_va", "eval/top10_va_share")


def read_best(output_dir: str | Path) -> dict[str, Any] | None:
    """The run's best.json as a dict, or None when there is none (or it is unreadable)."""
    path = Path(output_dir) / BEST_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and "step" in record else None


def protected_steps(output_dir: str | Path) -> set[int]:
    """Steps whose checkpoints pruning must keep: the best one, if best.json names a step checkpoint."""
    record = read_best(output_dir)
    if record and str(record.get("checkpoint", "")).startswith("checkpoints/"):
        return {int(record["step"])}
    return set()


class BestTracker:
    """Keeps best.json of one output dir up to date (main process writes; every process may ask).

    Args:
        output_dir: the run's output directory.
        metric: a key of EVAL_METRICS, or None to track nothing.
        mode: "max" or "min".
        start_step: the step training starts (or resumes) from. A best.json from a later step than
            that (a run resumed from an earlier checkpoint, or a fresh run in an old directory) is
            discarded: the replayed steps decide again.
        is_main: only the main process writes or deletes best.json.
    """

    def __init__(self, output_dir: str | Path, metric: str | None, mode: str = "max", *, start_step: int = 0,
                 is_main: bool = True):
        self.output_dir = Path(output_dir)
        self.metric = metric
        self.mode = mode
        self.is_main = is_main
        record = read_best(self.output_dir)
        stale = record is not None and (int(record["step"]) > start_step or record.get("metric") != metric
                                        or record.get("mode") != mode)
        if stale:
            if is_main:
                (self.output_dir / BEST_FILE).unlink(missing_ok=True)
            record = None
        self.record = record

    @property
    def enabled(self) -> bool:
        return self.metric is not None

    def value_of(self, result: dict[str, float]) -> float | None:
        """The tracked metric in an `evaluate_student` result (keys without the "eval/" prefix)."""
        if not self.enabled:
            return None
        value = result.get(self.metric.removeprefix("eval/"))
        return float(value) if value is not None and math.isfinite(float(value)) else None

    def improves(self, result: dict[str, float], step: int) -> bool:
        """Whether the eval of `step` beats the best so far (always False for step 0 and NaN values)."""
        value = self.value_of(result)
        if value is None or step < 1:
            return False
        if self.record is None:
            return True
        best = float(self.record["value"])
        return value > best if self.mode == "max" else value < best

    def commit(self, step: int, value: float, checkpoint: str | Path) -> dict[str, Any]:
        """Record `checkpoint` (a complete checkpoint or final/ of this run) as the best; return the record."""
        checkpoint = Path(checkpoint)
        try:
            rel = checkpoint.resolve().relative_to(self.output_dir.resolve()).as_posix()
        except ValueError:
            rel = str(checkpoint)
        self.record = {"metric": self.metric, "mode": self.mode, "step": int(step), "value": float(value),
                       "checkpoint": rel}
        if self.is_main:
            atomic_write_json(self.output_dir / BEST_FILE, self.record)
        return self.record
