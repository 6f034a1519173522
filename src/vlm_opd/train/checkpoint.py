"""Checkpoint directories: atomic, marked complete, verified, pruned to the last N, found again on resume.

Layout: `<output_dir>/checkpoints/step-000010/` holding whatever the trainer writes (student weights,
optimizer, scheduler, RNG states, data position), then `MANIFEST.json` (size and checksum of every file),
then `COMPLETE` (JSON: step, time, run_id). A directory without `COMPLETE` is a crash during save: it is
ignored (and reported) when looking for the latest checkpoint. `COMPLETE` proves the write finished;
the manifest proves the files are still whole: `resume: latest` verifies it and falls back to the
newest intact checkpoint (one line per damaged one). The `run_id` ties a checkpoint to its run: a run
neither resumes nor prunes another run's checkpoints.

The checksum is xxh3-64 (the `xxhash` package): about 11-28 GiB/s here against 2.7-5.7 GiB/s for
zlib's CRC-32 and under 1 GiB/s for blake2b (benchmarks/checkpoint_verify.py). Manifests written with
CRC-32 by earlier versions are still verified. It detects damage (truncation, bit rot, a partial copy),
not tampering: a checkpoint stays code-trusted (see README, Reliability).
"""

from __future__ import annotations

import json
import os
import random
import sys
import zlib
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
MANIFEST = "MANIFEST.json"
_CHUNK = 8 * 2**20
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
        write_manifest(tmp)
        atomic_write_json(tmp / MARKER, {"step": step, "time": time.time(), **(extra or {})})
        old = root / f".step-{step:06d}.old"
        if final.exists():  # re-saving a step: swap only once the new one is complete
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        prune_checkpoints(output_dir, keep_last, run_id=(extra or {}).get("run_id"))
    barrier()
    return final


def _crc32(fh) -> int:
    crc = 0
    while chunk := fh.read(_CHUNK):
        crc = zlib.crc32(chunk, crc)
    return crc  # an int, as manifests written with CRC-32 store it


def _xxh3_64(fh) -> str:
    import xxhash

    h = xxhash.xxh3_64()
    while chunk := fh.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


CHECKSUMS = {"xxh3_64": _xxh3_64, "crc32": _crc32}  # manifest "algorithm" -> file digest
CHECKSUM = "xxh3_64"  # what new manifests use


def file_checksum(path: Path, algorithm: str = CHECKSUM, fsync: bool = False):
    with open(path, "rb") as fh:
        digest = CHECKSUMS[algorithm](fh)
        if fsync:  # the files are durable before COMPLETE is written
            os.fsync(fh.fileno())
    return digest


def write_manifest(directory: Path) -> dict:
    """Record size and checksum of every file under `directory` in `MANIFEST.json` (written atomically)."""
    files = {}
    for f in sorted(directory.rglob("*")):
        if f.is_file() and f.name not in (MANIFEST, MARKER):
            files[f.relative_to(directory).as_posix()] = {
                "size": f.stat().st_size, CHECKSUM: file_checksum(f, CHECKSUM, fsync=True)}
    manifest = {"algorithm": CHECKSUM, "files": files}
    atomic_write_json(directory / MANIFEST, manifest, indent=None)
    return manifest


def verify_checkpoint(path: Path) -> str | None:
    """None when every file of the manifest is present with its size and checksum; else what is wrong."""
    mpath = path / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        files = manifest["files"]
        algorithm = manifest.get("algorithm")
        assert isinstance(files, dict) and algorithm in CHECKSUMS
    except FileNotFoundError:
        return f"no {MANIFEST}"
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return f"{MANIFEST} is unreadable"
    for rel, entry in files.items():
        f = path / rel
        try:
            size = f.stat().st_size
        except OSError:
            return f"{rel} is missing"
        if size != entry.get("size"):
            return f"{rel} has {size} bytes, the manifest says {entry.get('size')}"
        if file_checksum(f, algorithm) != entry.get(algorithm):
            return f"{rel} fails its {algorithm} check (damaged)"
    return None


def checkpoint_run_id(path: Path) -> str | None:
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker.get("run_id") if isinstance(marker, dict) else None


def list_checkpoints(output_dir: str | Path, complete_only: bool = True,
                     run_id: str | None = None) -> list[tuple[int, Path]]:
    """(step, path) pairs sorted by step; incomplete directories are skipped with a warning.

    With `run_id`, only the checkpoints of that run (others are never resumed or pruned by it).
    """
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
        if run_id is not None and checkpoint_run_id(p) != run_id:
            continue
        out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(output_dir: str | Path, run_id: str | None = None) -> Path | None:
    ckpts = list_checkpoints(output_dir, run_id=run_id)
    return ckpts[-1][1] if ckpts else None


def resolve_resume(resume: str | None, output_dir: str | Path, run_id: str | None = None) -> Path | None:
    """`latest` -> newest intact checkpoint of the run (None if there is none yet); a path -> that checkpoint.

    `latest` verifies each candidate's manifest, newest first: a damaged one is reported in one line on
    stderr and the next older one is tried; when every checkpoint is damaged it is an error. A path must be
    complete and intact, and (given `run_id`) belong to this run.
    """
    if resume is None:
        return None
    if resume == "latest":
        ckpts = list_checkpoints(output_dir, run_id=run_id)
        damaged = []
        for _, path in reversed(ckpts):
            problem = verify_checkpoint(path)
            if problem is None:
                return path
            damaged.append(f"{path.name} ({problem})")
            print(f"resume: checkpoint {path} is damaged: {problem}; trying the previous one", file=sys.stderr)
        if damaged:
            raise ConfigError(f"resume=latest: no intact checkpoint in {checkpoint_root(output_dir)}: "
                              f"{'; '.join(damaged)}; start over with overwrite=true or another output_dir")
        return None
    p = Path(resume)
    if not p.is_dir():
        raise ConfigError(f"resume: checkpoint directory not found: {p}")
    if not (p / MARKER).is_file():
        raise ConfigError(f"resume: {p} is incomplete (no {MARKER} marker); pick an earlier checkpoint")
    problem = verify_checkpoint(p)
    if problem is not None:
        raise ConfigError(f"resume: checkpoint {p} is damaged: {problem}; pick an earlier checkpoint")
    if run_id is not None and checkpoint_run_id(p) != run_id:
        raise ConfigError(f"resume: {p} is a checkpoint of another run, not of the run in {output_dir}; "
                          f"resume a run in its own output_dir (output_dir={p.parent.parent})")
    return p


def prune_checkpoints(output_dir: str | Path, keep_last: int, run_id: str | None = None) -> None:
    """Delete all but the newest `keep_last` complete checkpoints of run `run_id` (all runs' when None),
    never the best one (best.json)."""
    from vlm_opd.train.best import protected_steps

    keep = protected_steps(output_dir)
    ckpts = list_checkpoints(output_dir, run_id=run_id)
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


def load_accelerate_state(accelerator, checkpoint: Path) -> None:
    """`accelerator.load_state` of a checkpoint's `state/`, a mismatch with the current models being one line.

    The checkpoint's files passed `verify_checkpoint`, so a failure here means the models, LoRA or optimizer
    built from this config do not fit the saved state (e.g. another student architecture).
    """
    try:
        accelerator.load_state(str(checkpoint / "state"))
    except (RuntimeError, KeyError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"resume: the state in {checkpoint} does not fit the models of this config ({first[:300]}); "
                          "resume with the config the run was started with, or start a new run") from None


def resolve_resume_shared(accelerator, resume: str | None, output_dir: str | Path,
                          run_id: str | None = None) -> Path | None:
    """`resolve_resume` decided by the main process (it verifies the files) and shared with the others,
    so every process loads the same checkpoint even if they would see the files differently."""
    path, error = None, None
    if accelerator.is_main_process:
        try:
            path = resolve_resume(resume, output_dir, run_id=run_id)
        except ConfigError as err:
            error = str(err)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        shared = [error, None if path is None else str(path)]
        broadcast_object_list(shared, from_process=0)
        error, path = shared[0], None if shared[1] is None else Path(shared[1])
    if error is not None:
        raise ConfigError(error)
    return path
