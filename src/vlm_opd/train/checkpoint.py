"""Checkpoint directories: atomic, marked complete, pruned to the last N, found again on resume.

Layout: `<output_dir>/checkpoints/step-000010/` holding whatever the trainer writes (student weights,
optimizer, scheduler, RNG states, data position) plus `COMPLETE` (JSON: step, time). A directory without
`COMPLETE` is a crash during save: it is ignored (and reported) when looking for the latest checkpoint.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlm_opd.errors import ConfigError
from vlm_opd.io_utils import atomic_write_json

MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def save_checkpoint(output_dir: str | Path, step: int, write: Callable[[Path], None], keep_last: int = 2,
                    extra: dict[str, Any] | None = None, *, is_main: bool = True,
                    barrier: Callable[[], None] = lambda: None,
                    write_main: Callable[[Path], None] | None = None) -> Path:
    """Write the checkpoint of `step` so that it only ever appears complete.

    Every process calls this. The main process makes a temp dir with a fixed name (so all processes
    find it), every process fills its share with `write(tmp_dir)` (e.g. accelerate's sharded state),
    then the main process adds `write_main(tmp_dir)`, the `COMPLETE` marker, renames the directory to
    `step-NNNNNN` and prunes old checkpoints. `barrier` synchronises the processes (one process: no-op).
    A crash at any point leaves at most a `.step-NNNNNN.tmp` directory, which is never listed.
    """
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    try:
        write(tmp)
    except BaseException:
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    barrier()
    if is_main:
        if write_main is not None:
            write_main(tmp)
        atomic_write_json(tmp / MARKER, {"step": step, "time": time.time(), **(extra or {})})
        old = root / f".step-{step:06d}.old"
        if final.exists():  # re-saving a step: swap only once the new one is complete
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        prune_checkpoints(output_dir, keep_last)
    barrier()
    return final


def list_checkpoints(output_dir: str | Path, complete_only: bool = True) -> list[tuple[int, Path]]:
    """(step, path) pairs sorted by step; incomplete directories are skipped with a warning."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if not (m and p.is_dir()):
            continue
        if complete_only and not (p / MARKER).is_file():
            warnings.warn(f"ignoring incomplete checkpoint {p} (no {MARKER} marker: the save was interrupted)",
                          stacklevel=2)
            continue
        out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1][1] if ckpts else None


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """`latest` -> newest complete checkpoint (None if there is none yet); a path -> that checkpoint."""
    if resume is None:
        return None
    if resume == "latest":
        return latest_checkpoint(output_dir)
    p = Path(resume)
    if not p.is_dir():
        raise ConfigError(f"resume: checkpoint directory not found: {p}")
    if not (p / MARKER).is_file():
        raise ConfigError(f"resume: {p} is incomplete (no {MARKER} marker); pick an earlier checkpoint")
    return p


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints, never the best one (best.json)."""
    from vlm_opd.train.best import protected_steps

    keep = protected_steps(output_dir)
    ckpts = list_checkpoints(output_dir)
    for step, path in ckpts[:-keep_last] if keep_last > 0 else ckpts:
        if step not in keep:
            shutil.rmtree(path, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from (python, numpy, torch CPU and CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
