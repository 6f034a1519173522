"""A run owns its output directory: a lock for its whole life, no silent overwrite, no changed meaning on resume.

`claim_output_dir(cfg, accelerator)` is called by every process at the start of a training stage. The
main process decides (checks the directory, takes the lock, writes `run.json` / `history.jsonl`) and
broadcasts the outcome; the other processes follow it, so a refusal stops every process with the same
one-line error.

Files a run keeps in its `output_dir`:
- `.vlm-opd.lock`  JSON {host, pid, pid_start, started, command}: held from start to exit. A lock whose
  process is gone (same host) is taken over with a message; a live one refuses the second writer.
- `run.json`       the run's identity: a random `run_id` and the config it was started with. Checkpoints
  carry the `run_id` in their marker: a run never resumes or prunes another run's checkpoints.
- `history.jsonl`  one line per start / resume / overwrite: time, host, pid, step, and on resume every
  key that changed (only keys in `MUTABLE_ON_RESUME` may change).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_opd.errors import ConfigError
from vlm_opd.io_utils import atomic_write_json

LOCK_NAME = ".vlm-opd.lock"
RUN_FILE = "run.json"
HISTORY_FILE = "history.jsonl"

# What a run writes into its output_dir; `overwrite: true` removes exactly these (other files are left).
RUN_ARTIFACTS = ("checkpoints", "final", "metrics.jsonl", "config.yaml", RUN_FILE, HISTORY_FILE,
                 "trainer_state.json", "samples.jsonl", "skipped_rows.jsonl", "best.json")

# Keys that may change when a run is resumed: they decide how the run is observed, saved or placed on
# hardware, not what it computes. Every other key (method, models, data, seed, schedule length,
# optimizer, loss, rollout settings, ...) is the run's identity: changing it on resume is refused.
MUTABLE_ON_RESUME = (
    "run_name", "output_dir", "resume", "overwrite", "checkpoint_every", "keep_last", "log_every",
    "sample_every", "trackers", "nan_policy", "eval", "data.eval", "data.eval_split", "data.eval_limit",
    "student.device", "teacher.device", "student.attn_implementation", "teacher.attn_implementation",
    "student.gradient_checkpointing", "loss.chunk_size", "va_opd.batch_real_and_degraded",
    "parallel.teacher_offload",
)


def _mutable(key: str) -> bool:
    return any(key == m or key.startswith(m + ".") for m in MUTABLE_ON_RESUME)


# ------------------------------------------------------------------------------------------------
# Paths


def check_dir_path(path: str | Path, what: str) -> Path:
    """`path` must be a directory or creatable as one: one line naming it when it (or a parent) is a file."""
    p = Path(path)
    if str(path).strip() == "":
        raise ConfigError(f"{what}: empty path (name a directory)")
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {p} is a file, expected a directory")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{what} {p}: its parent {parent} is a file, expected a directory")
            break
    return p


# ------------------------------------------------------------------------------------------------
# The lock


def _pid_start(pid: int) -> str | None:
    """Start time of `pid` in clock ticks since boot (Linux), to tell a reused pid from the holder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of /proc/PID/stat, counted after "(comm)"


def _alive(pid: int, pid_start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    now = _pid_start(pid)
    return not (pid_start and now and now != pid_start)


def describe_holder(info: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid')} on {info.get('host')} since {started}"


class DirLock:
    """An exclusive lock file in a directory, held for a run's whole life.

    Created with link(2) from a fully written temp file, so the lock appears atomically with its content.
    """

    def __init__(self, directory: str | Path, what: str):
        self.dir = Path(directory)
        self.path = self.dir / LOCK_NAME
        self.what = what
        self.info: dict[str, Any] = {}
        self.held = False

    def acquire(self) -> DirLock:
        pid = os.getpid()
        self.info = {"host": socket.gethostname(), "pid": pid, "pid_start": _pid_start(pid),
                     "started": time.time(), "command": " ".join(sys.argv)[:500]}
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{LOCK_NAME}.{pid}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(self.info) + "\n")
        try:
            for _ in range(3):
                try:
                    self._create(tmp)
                    self.held = True
                    return self
                except FileExistsError:
                    pass
                holder = self._read()
                if holder is None:  # vanished between link and read, or torn: look again
                    if self.path.exists() and time.time() - self.path.stat().st_mtime > 5:
                        print(f"{self.what} {self.dir}: removing an unreadable lock file {self.path}",
                              file=sys.stderr)
                        self.path.unlink(missing_ok=True)
                    continue
                same_host = holder.get("host") == self.info["host"]
                if same_host and not _alive(int(holder.get("pid", -1)), holder.get("pid_start")):
                    print(f"{self.what} {self.dir}: taking over a stale lock of {describe_holder(holder)} "
                          "(that process is gone)", file=sys.stderr)
                    self.path.unlink(missing_ok=True)
                    continue
                hint = "" if same_host else f" (another host: if that run is dead, delete {self.path})"
                raise ConfigError(f"{self.what} {self.dir} is in use by {describe_holder(holder)}{hint}; "
                                  f"wait for it, or use another directory")
            raise ConfigError(f"{self.what} {self.dir}: could not take the lock {self.path}")
        finally:
            tmp.unlink(missing_ok=True)

    def _create(self, tmp: Path) -> None:
        try:
            os.link(tmp, self.path)  # appears with its content, or not at all
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: exclusive create, then write
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w") as fh:
                fh.write(tmp.read_text())

    def _read(self) -> dict | None:
        try:
            info = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def release(self) -> None:
        if not self.held:
            return
        holder = self._read()
        if holder is not None and holder.get("pid") == self.info["pid"] and holder.get("started") == self.info["started"]:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ------------------------------------------------------------------------------------------------
# Identity and history


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k not in ("field_map", "synthetic", "chat_template_kwargs"):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def config_changes(before: dict, after: dict) -> tuple[list[str], dict[str, list]]:
    """(identity keys that differ, {mutable key: [before, after]}) between two config dicts."""
    a, b = flatten(before), flatten(after)
    defaults = _default_config()
    identity, mutable = [], {}
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        if key not in a and key in defaults and b.get(key) == defaults[key]:
            continue  # a key added by a later version, at its default: the run means the same
        if _mutable(key):
            mutable[key] = [a.get(key), b.get(key)]
        else:
            identity.append(key)
    return identity, mutable


def _default_config() -> dict[str, Any]:
    """Every TrainConfig key (flattened) with its default value."""
    import dataclasses

    from vlm_opd.config import TrainConfig

    def walk(cls) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
                out[f.name] = walk(type(value)) if dataclasses.is_dataclass(value) else value
        return out

    return flatten(walk(TrainConfig))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_run(out_dir: Path) -> dict | None:
    path = out_dir / RUN_FILE
    if not path.exists():
        return None
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} is unreadable ({err}); the run's identity is lost: use overwrite=true to "
                          "start over in this directory, or another output_dir") from None
    if not isinstance(run, dict) or not isinstance(run.get("run_id"), str) or not isinstance(run.get("config"), dict):
        raise ConfigError(f"{path}: expected an object with run_id and config; use overwrite=true to start over "
                          "in this directory, or another output_dir")
    return run


def append_history(out_dir: Path, event: dict) -> None:
    with open(out_dir / HISTORY_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"time": time.time(), "host": socket.gethostname(), "pid": os.getpid(), **event},
                            default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _contents(out_dir: Path) -> list[str]:
    if not out_dir.is_dir():
        return []
    return sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_NAME and not p.name.startswith(f".{LOCK_NAME}."))


# ------------------------------------------------------------------------------------------------
# Claiming an output directory


_BOOKKEEPING = (RUN_FILE, HISTORY_FILE, "config.yaml", "skipped_rows.jsonl", "metrics.jsonl")


def _produced_nothing(out_dir: Path, contents: list[str]) -> bool:
    """True when the directory holds only a run's bookkeeping files and no metrics line: nothing to lose."""
    if not set(contents) <= set(_BOOKKEEPING) or RUN_FILE not in contents:
        return False
    metrics = out_dir / "metrics.jsonl"
    return not metrics.exists() or metrics.stat().st_size == 0


@dataclass
class RunClaim:
    """What the main process decided about the output directory (shared with the other processes)."""

    run_id: str
    resuming: bool  # resume was asked for and this directory holds this run's state
    lock: DirLock | None = None  # main process only

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _decide(cfg_dict: dict, out_dir: Path, lock: DirLock) -> RunClaim:
    """Main process: check the directory against the config; take the lock; record the run."""
    resume, overwrite = cfg_dict.get("resume"), bool(cfg_dict.get("overwrite"))
    if resume is not None and overwrite:
        raise ConfigError("resume and overwrite exclude each other: resume continues the run in output_dir, "
                          "overwrite replaces it")
    lock.acquire()
    contents = _contents(out_dir)
    if contents and _produced_nothing(out_dir, contents):
        # A run that stopped before its first metrics line (bad data path, missing model...): nothing to lose.
        print(f"output_dir {out_dir}: the previous run there stopped before producing anything; starting over",
              file=sys.stderr)
        for name in contents:
            (out_dir / name).unlink()
        contents = []
    run = read_run(out_dir)
    if overwrite and contents:
        remove_artifacts(out_dir, RUN_ARTIFACTS, "overwrite=true")
        run = None
    elif contents and resume is None:
        what = (f"run {run['run_id'][:8]} (method {run['config'].get('method')})" if run else
                f"files that are not this run's: {', '.join(contents[:5])}{' ...' if len(contents) > 5 else ''}")
        raise ConfigError(f"output_dir {out_dir} already holds {what}; choose: resume=latest to continue it, "
                          "overwrite=true to replace it, or another output_dir")
    elif contents and run is None:
        raise ConfigError(f"resume={resume}: output_dir {out_dir} holds no run.json, so nothing there is this "
                          f"run's state ({', '.join(contents[:5])}); choose: overwrite=true to start over there, "
                          "or another output_dir")
    if run is not None:  # resume: the config must mean the same run
        changed, mutable = config_changes(run["config"], cfg_dict)
        if changed:
            a, b = flatten(run["config"]), flatten(cfg_dict)
            shown = ", ".join(f"{k} ({_short(a.get(k))} -> {_short(b.get(k))})" for k in changed)
            raise ConfigError(f"resume: this config changes what the run in {out_dir} means: {shown}; "
                              f"only {', '.join(MUTABLE_ON_RESUME[4:9])}, "
                              f"eval.* and the like may change on resume (see README, Reliability); "
                              "use another output_dir for a different run")
        mutable = {k: v for k, v in mutable.items() if k not in ("resume", "overwrite")}
        event = {"event": "resume", "resume": resume}
        if mutable:
            event["changed"] = mutable
            print(f"resume: changed since the run started: {', '.join(mutable)} (recorded in "
                  f"{out_dir / HISTORY_FILE})", file=sys.stderr)
        append_history(out_dir, event)
        return RunClaim(run_id=run["run_id"], resuming=True, lock=lock)
    run_id = uuid.uuid4().hex
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / RUN_FILE, {"run_id": run_id, "created": time.time(), "config": cfg_dict})
    append_history(out_dir, {"event": "overwrite" if overwrite and contents else "start", "run_id": run_id})
    return RunClaim(run_id=run_id, resuming=False, lock=lock)


def claim_output_dir(cfg_dict: dict, out_dir: Path, accelerator=None) -> RunClaim:
    """Every process calls this; the main process decides and the others follow (see module docstring)."""
    is_main = accelerator is None or accelerator.is_main_process
    nproc = 1 if accelerator is None else accelerator.num_processes
    claim, error = None, None
    if is_main:
        lock = DirLock(out_dir, "output_dir")
        try:
            check_dir_path(out_dir, "output_dir")
            claim = _decide(cfg_dict, out_dir, lock)
        except ConfigError as err:
            lock.release()
            error = str(err)
    if nproc > 1:
        from accelerate.utils import broadcast_object_list

        shared = [error, None if claim is None else (claim.run_id, claim.resuming)]
        broadcast_object_list(shared, from_process=0)
        error = shared[0]
        if not is_main and error is None:
            claim = RunClaim(run_id=shared[1][0], resuming=shared[1][1])
    if error is not None:
        raise ConfigError(error)
    assert claim is not None
    return claim


def remove_artifacts(directory: Path, names, why: str) -> list[str]:
    """Delete the named files / directories that exist in `directory` (an explicit overwrite), and say so."""
    removed = [name for name in names if (directory / name).exists()]
    for name in removed:
        p = directory / name
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    if removed:
        print(f"{why}: removed {', '.join(removed)} from {directory}", file=sys.stderr)
    return removed
