"""Run `vlm-opd train` configs as 1-thread subprocesses, a few at a time, with one progress bar each.

Two 1-thread runs use this project's 2-core CPU better than one 2-thread run (DESIGN.md: ~1.3x
throughput), so the demo trains teacher and student side by side, then OPD and VA-OPD side by side.
Each child writes `metrics.jsonl`; the parent follows those files to draw the bars (step, ETA, latest
loss and eval accuracy), so the children run with `--no-progress` and their output goes to a log file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_opd.errors import VlmOpdError
from vlm_opd.io_utils import atomic_write_text


class DemoError(VlmOpdError, RuntimeError):
    """A demo phase failed (the message names the run and the tail of its log)."""


@dataclass
class Run:
    """One `vlm-opd train` run: its label, config mapping and total optimizer steps."""

    name: str
    label: str
    config: dict[str, Any]
    config_path: Path = field(init=False)
    log_path: Path = field(init=False)

    @property
    def output_dir(self) -> Path:
        return Path(self.config["output_dir"])

    @property
    def steps(self) -> int:
        return int(self.config["steps"])


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _progress_state(metrics: Path) -> tuple[int, dict[str, float]]:
    """(last training step, {"loss": latest training loss, "eval/...": latest eval}) from a run's
    metrics.jsonl; a partly written last line is skipped."""
    step, state = 0, {}
    try:
        text = metrics.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0, {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "eval/accuracy" in record:
            state.update({k: v for k, v in record.items() if k.startswith("eval/")})
        elif "loss" in record and isinstance(record.get("step"), int):
            step = max(step, record["step"])
            state["loss"] = record["loss"]
    return step, state


def _describe(run: Run, state: dict[str, float]) -> str:
    """Label plus the latest eval (accuracy, mean VA) or, before the first eval, the training loss."""
    if "eval/accuracy" in state:
        value = f"acc {state['eval/accuracy']:.2f}"
        if "eval/mean_va" in state:
            value += f" VA {state['eval/mean_va']:.2f}"
    elif "loss" in state:
        value = f"loss {state['loss']:.3f}"
    else:
        value = ""
    return f"{run.label:<18} {value:<16}"


def run_parallel(runs: list[Run], config_dir: Path, *, jobs: int = 2, threads: int = 1, console=None,
                 poll_s: float = 0.5) -> dict[str, float]:
    """Run `runs` with at most `jobs` at once, each `threads`-threaded; return {name: wall seconds}.

    Raises:
        DemoError: a run exited non-zero (its log's last lines are in the message).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    config_dir.mkdir(parents=True, exist_ok=True)
    import yaml

    for run in runs:
        run.config_path = config_dir / f"{run.name}.yaml"
        run.log_path = config_dir / f"{run.name}.log"
        atomic_write_text(run.config_path, yaml.safe_dump(run.config, sort_keys=False))
        # A stale metrics file from an earlier demo in the same --out would confuse the bars.
        (run.output_dir / "metrics.jsonl").unlink(missing_ok=True)

    pending = list(runs)
    active: dict[str, tuple[Run, subprocess.Popen, Any, float]] = {}
    walls: dict[str, float] = {}
    progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                        transient=False)
    tasks = {run.name: progress.add_task(_describe(run, {}), total=run.steps, start=False) for run in runs}
    try:
        with progress:
            while pending or active:
                while pending and len(active) < jobs:
                    run = pending.pop(0)
                    log = open(run.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed when the run ends
                    # A demo rerun in the same --out replaces its earlier runs (a run refuses a used
                    # output_dir unless told so).
                    cmd = [sys.executable, "-m", "vlm_opd.cli", "train", str(run.config_path), "--no-progress",
                           "overwrite=true"]
                    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(threads))
                    active[run.name] = (run, proc, log, time.time())
                    progress.start_task(tasks[run.name])
                for name, (run, proc, log, t0) in list(active.items()):
                    step, state = _progress_state(run.output_dir / "metrics.jsonl")
                    progress.update(tasks[name], completed=step, description=_describe(run, state))
                    code = proc.poll()
                    if code is None:
                        continue
                    log.close()
                    del active[name]
                    walls[name] = time.time() - t0
                    if code != 0:
                        tail = "\n".join(run.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
                        raise DemoError(f"run {name!r} failed (exit {code}); config {run.config_path}, "
                                        f"log {run.log_path}:\n{tail}")
                    final_step, state = _progress_state(run.output_dir / "metrics.jsonl")
                    if 0 < final_step < run.steps:  # stopped early (eval.stop_at_accuracy)
                        progress.update(tasks[name], total=final_step, completed=final_step,
                                        description=_describe(run, state) + " stopped")
                    else:
                        progress.update(tasks[name], completed=run.steps)
                    progress.stop_task(tasks[name])
                time.sleep(poll_s)
    finally:
        for _run, proc, log, _t0 in active.values():  # only on error/interrupt: stop our own children
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    return walls
