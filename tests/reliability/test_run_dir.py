"""A run owns its output directory (issue 18, cases 1-3, 7, 11, 13): a lock for its whole life, no silent
overwrite of anything, no resume that changes what the run means, and one line for impossible paths."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlm_opd.cli import main
from vlm_opd.config import config_from_dict
from vlm_opd.errors import ConfigError
from vlm_opd.train import trainer as trainer_mod
from vlm_opd.train.checkpoint import latest_checkpoint, list_checkpoints, resolve_resume, save_checkpoint
from vlm_opd.train.run_dir import HISTORY_FILE, LOCK_NAME, RUN_FILE, DirLock


def _train(cfg: dict):
    return trainer_mod.train(config_from_dict(cfg), progress=False)


@pytest.fixture(scope="module")
def finished_run(rh, tmp_path_factory, tiny_qwen2vl_dir):
    """A finished 4-step sft run with checkpoints at steps 1-3 (read-only: copy before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    _train(rh.tiny_cfg(out, tiny_qwen2vl_dir, steps=4, checkpoint_every=1, keep_last=3))
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ---- case 1: no silent overwrite --------------------------------------------------------------


def test_case01a_training_into_a_finished_run_without_resume_is_refused(rh, tmp_path, finished_run, tiny_qwen2vl_dir,
                                                                        cli_error):
    run = _copy(finished_run, tmp_path / "run")
    before = rh.tree_digest(run)
    cfg = rh.write_cfg(tmp_path / "c.yaml", rh.tiny_cfg(run, tiny_qwen2vl_dir, steps=1))
    msg = cli_error("train", str(cfg), "--no-progress")
    assert "already holds run" in msg and "resume=latest" in msg and "overwrite=true" in msg
    assert rh.tree_digest(run) == before  # final/, metrics.jsonl, config.yaml, checkpoints untouched
    # the explicit choice works, and replaces the old run's files
    assert main(["train", str(cfg), "--no-progress", "overwrite=true"]) == 0
    assert not (run / "checkpoints").exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    events = [json.loads(l)["event"] for l in (run / HISTORY_FILE).read_text().splitlines()]
    assert events == ["overwrite"]


def test_case01b_training_into_an_unrelated_non_empty_directory_is_refused(rh, tmp_path, tiny_qwen2vl_dir, cli_error):
    mine = tmp_path / "mine"
    (mine / "final").mkdir(parents=True)
    (mine / "final" / "model.safetensors").write_bytes(b"my precious weights")
    (mine / "notes.txt").write_text("keep me")
    before = rh.tree_digest(mine)
    cfg = rh.write_cfg(tmp_path / "c.yaml", rh.tiny_cfg(mine, tiny_qwen2vl_dir, steps=1))
    msg = cli_error("train", str(cfg), "--no-progress")
    assert "files that are not this run's" in msg and "final" in msg and "overwrite=true" in msg
    # resume=latest does not adopt a directory that holds no run either
    msg = cli_error("train", str(cfg), "--no-progress", "resume=latest")
    assert "no run.json" in msg
    assert rh.tree_digest(mine) == before


# ---- case 2: one writer per output_dir ----------------------------------------------------------


def _sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _plant_lock(directory: Path, pid: int, host: str | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / LOCK_NAME).write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid,
                                                   "pid_start": None, "started": time.time() - 60}))


def test_case02_live_lock_refuses_a_second_writer_and_stale_lock_is_taken_over(rh, tmp_path, tiny_qwen2vl_dir,
                                                                               cli_error, capsys):
    run = tmp_path / "run"
    holder = _sleeper()
    try:
        _plant_lock(run, holder.pid)
        cfg = rh.write_cfg(tmp_path / "c.yaml", rh.tiny_cfg(run, tiny_qwen2vl_dir, steps=1))
        msg = cli_error("train", str(cfg), "--no-progress")
        assert f"is in use by pid {holder.pid} on {socket.gethostname()}" in msg
        assert not (run / RUN_FILE).exists()  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead now: its lock is stale, taken over with a message
    assert main(["train", str(cfg), "--no-progress"]) == 0
    assert f"taking over a stale lock of pid {holder.pid}" in capsys.readouterr().err
    assert not (run / LOCK_NAME).exists()  # released at the end


def test_lock_of_another_host_is_not_taken_over(tmp_path):
    _plant_lock(tmp_path, 1, host="some-other-host")
    with pytest.raises(ConfigError, match="in use by pid 1 on some-other-host.*another host"):
        DirLock(tmp_path, "output_dir").acquire()


def test_reused_pid_is_recognised_as_stale(tmp_path, capsys):
    # The lock names a live pid (ours) but with another process start time: the holder is gone.
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                  "pid_start": "1", "started": 0}))
    with DirLock(tmp_path, "output_dir") as lock:
        assert lock.held
    assert "stale lock" in capsys.readouterr().err


@pytest.mark.slow
def test_case02_two_trainings_started_together_one_is_refused(rh, tmp_path, tiny_qwen2vl_dir):
    run = tmp_path / "run"
    cfg = rh.write_cfg(tmp_path / "c.yaml", rh.tiny_cfg(run, tiny_qwen2vl_dir, steps=400))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vlm_opd.cli", "train", str(cfg), "--no-progress"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").stat().st_size:
            assert first.poll() is None and time.time() < deadline, first.stderr.read()[-2000:]
            time.sleep(0.1)
        second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 2
        assert f"is in use by pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None  # the first run is unharmed
    finally:
        first.kill()
        first.communicate()


# ---- case 3: another run's checkpoints are never pruned or resumed --------------------------------


def test_case03_new_run_in_a_directory_with_an_older_runs_checkpoints(rh, tmp_path, finished_run, tiny_qwen2vl_dir,
                                                                      tiny_qwen25vl_dir, cli_error):
    run = _copy(finished_run, tmp_path / "run")  # an sft run with checkpoints at steps 1..3
    old = {p.name for _, p in list_checkpoints(run)}
    new_cfg = rh.tiny_cfg(run, tiny_qwen2vl_dir, tiny_qwen25vl_dir, method="va_opd", steps=2, checkpoint_every=1,
                       keep_last=1)
    cfg = rh.write_cfg(tmp_path / "c.yaml", new_cfg)
    assert "already holds run" in cli_error("train", str(cfg), "--no-progress")
    msg = cli_error("train", str(cfg), "--no-progress", "resume=latest")  # the old run's step is not continued
    assert "changes what the run in" in msg and "method ('sft' -> 'va_opd')" in msg
    assert {p.name for _, p in list_checkpoints(run)} == old
    # overwrite: the old run's checkpoints go first, so keep_last keeps the new run's own
    assert main(["train", str(cfg), "--no-progress", "overwrite=true"]) == 0
    new_id = json.loads((run / RUN_FILE).read_text())["run_id"]
    assert [(s, json.loads((p / "COMPLETE").read_text())["run_id"]) for s, p in list_checkpoints(run)] == [(1, new_id)]


def test_case03_foreign_checkpoints_are_neither_pruned_nor_resumed(tmp_path):
    def writer(d):
        (d / "w.txt").write_text("x")

    for step in (60, 70):
        save_checkpoint(tmp_path, step, writer, keep_last=2, extra={"run_id": "old"})
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, writer, keep_last=1, extra={"run_id": "new"})
    steps = {s: json.loads((p / "COMPLETE").read_text())["run_id"] for s, p in list_checkpoints(tmp_path)}
    assert steps == {3: "new", 60: "old", 70: "old"}
    assert resolve_resume("latest", tmp_path, run_id="new").name == "step-000003"
    assert latest_checkpoint(tmp_path, run_id="new").name == "step-000003"
    with pytest.raises(ConfigError, match="checkpoint of another run"):
        resolve_resume(str(tmp_path / "checkpoints" / "step-000070"), tmp_path, run_id="new")


# ---- case 7: output paths that are files ------------------------------------------------------------


def test_case07ab_train_output_dir_that_is_a_file_or_under_a_file(rh, tmp_path, tiny_qwen2vl_dir, cli_error):
    f = tmp_path / "afile"
    f.write_text("not a directory")
    cfg = rh.write_cfg(tmp_path / "c.yaml", rh.tiny_cfg(f, tiny_qwen2vl_dir, steps=1))
    assert f"output_dir {f} is a file" in cli_error("train", str(cfg), "--no-progress")
    under = f / "run"
    assert f"its parent {f} is a file" in cli_error("train", str(cfg), "--no-progress", f"output_dir={under}")
    assert f.read_text() == "not a directory"


# ---- case 11: resume may not change what the run means ----------------------------------------------


def test_case11a_resume_with_another_learning_rate_is_refused(rh, tmp_path, finished_run, tiny_qwen2vl_dir, cli_error):
    run = _copy(finished_run, tmp_path / "run")
    config_yaml = (run / "config.yaml").read_text()
    cfg = rh.write_cfg(tmp_path / "c.yaml", rh.tiny_cfg(run, tiny_qwen2vl_dir, steps=4, checkpoint_every=1, keep_last=3,
                                                 resume="latest"))
    msg = cli_error("train", str(cfg), "--no-progress", "optim.lr=0.5")
    assert "optim.lr (0.01 -> 0.5)" in msg
    assert (run / "config.yaml").read_text() == config_yaml  # not rewritten to claim the new value


def test_case11b_resume_with_another_method_is_refused(rh, tmp_path, finished_run, tiny_qwen2vl_dir, tiny_qwen25vl_dir,
                                                       cli_error):
    run = _copy(finished_run, tmp_path / "run")
    cfg = rh.write_cfg(tmp_path / "c.yaml", rh.tiny_cfg(run, tiny_qwen2vl_dir, tiny_qwen25vl_dir, method="opd", steps=4,
                                                 checkpoint_every=1, keep_last=3, resume="latest"))
    msg = cli_error("train", str(cfg), "--no-progress")
    assert "method ('sft' -> 'opd')" in msg and "teacher.path" in msg


def test_resume_may_change_logging_and_eval_and_records_it(rh, tmp_path, finished_run, tiny_qwen2vl_dir, capsys):
    run = _copy(finished_run, tmp_path / "run")
    cfg = rh.tiny_cfg(run, tiny_qwen2vl_dir, steps=4, checkpoint_every=2, keep_last=3, log_every=2, resume="latest")
    result = _train(cfg)
    assert result.steps == 4
    assert "changed since the run started: checkpoint_every, log_every, output_dir" in capsys.readouterr().err
    last = json.loads((run / HISTORY_FILE).read_text().splitlines()[-1])
    assert last["event"] == "resume" and last["resume"] == "latest"
    assert last["changed"] == {"checkpoint_every": [1, 2], "log_every": [1, 2],
                               "output_dir": [str(finished_run), str(run)]}  # the copy moved it


# ---- case 13: empty output_dir ------------------------------------------------------------------------


def test_case13_empty_output_dir_is_refused(rh, tmp_path, tiny_qwen2vl_dir, cli_error, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = rh.write_cfg(tmp_path / "c.yaml", rh.tiny_cfg(tmp_path / "x", tiny_qwen2vl_dir, steps=1))
    assert "output_dir: must not be empty" in cli_error("train", str(cfg), "--no-progress", "output_dir=")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # nothing written in the current directory
