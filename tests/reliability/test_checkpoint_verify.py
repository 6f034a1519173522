"""Checkpoints are verified on resume (issue 18, cases 4 and 5): a checkpoint damaged after it was completed
is reported in one line and `resume: latest` falls back to the newest intact one, ending with exactly the
weights of an uninterrupted run; no intact checkpoint, or a state that does not fit the models, is one line."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from vlm_opd.config import config_from_dict
from vlm_opd.errors import ConfigError
from vlm_opd.train import trainer as trainer_mod
from vlm_opd.train.checkpoint import MANIFEST, list_checkpoints, resolve_resume, save_checkpoint, verify_checkpoint

STEPS = 4


def _weights(model_dir):
    from vlm_opd.models import load_model

    return load_model(model_dir).model.state_dict()


@pytest.fixture(scope="module")
def reference_run(rh, tmp_path_factory, tiny_qwen2vl_dir):
    """An uninterrupted 4-step run with checkpoints after steps 1, 2 and 3 (read-only)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    trainer_mod.train(config_from_dict(rh.tiny_cfg(out, tiny_qwen2vl_dir, steps=STEPS, checkpoint_every=1,
                                                   keep_last=3)), progress=False)
    return out


def _crashed_copy(reference_run, dest):
    """The reference run as a crash after its last checkpoint leaves it: no final/, no final trainer state
    (a finished run is not retrained by resume=latest)."""
    run = shutil.copytree(reference_run, dest)
    shutil.rmtree(run / "final")
    (run / "trainer_state.json").unlink()
    return run


def _cut_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:-100])


def _not_json(path):
    path.write_text('{"step": 3, "wall_s": ')


def _flip_byte(path):  # same size: only the checksum can tell
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "case04a_weights_cut_in_half": ("state/model.safetensors", _cut_half),
    "case04b_optimizer_truncated": ("state/optimizer.bin", _truncate),
    "case04c_trainer_state_not_json": ("trainer_state.json", _not_json),
    "weights_bit_flip_same_size": ("state/model.safetensors", _flip_byte),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_intact_one_with_exact_weights(case, rh, tmp_path, reference_run,
                                                                                 tiny_qwen2vl_dir, capsys):
    run = _crashed_copy(reference_run, tmp_path / "run")
    rel, damage = DAMAGE[case]
    damage(run / "checkpoints" / "step-000003" / rel)
    cfg = rh.tiny_cfg(run, tiny_qwen2vl_dir, steps=STEPS, checkpoint_every=1, keep_last=3, resume="latest")
    capsys.readouterr()
    result = trainer_mod.train(config_from_dict(cfg), progress=False)
    err = capsys.readouterr().err
    damaged = [l for l in err.splitlines() if "is damaged" in l]
    assert len(damaged) == 1 and "step-000003" in damaged[0] and rel in damaged[0], err
    assert "resuming from" in err and "step-000002" in err
    # The run resumed from step 2 and replayed steps 3-4: the same weights as the uninterrupted run.
    ref, got = _weights(reference_run / "final"), _weights(result.final_dir)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_no_intact_checkpoint_is_one_clear_error(rh, tmp_path, reference_run, tiny_qwen2vl_dir, cli_error):
    run = _crashed_copy(reference_run, tmp_path / "run")
    for _, path in list_checkpoints(run):
        _cut_half(path / "state" / "model.safetensors")
    cfg = rh.write_cfg(tmp_path / "c.yaml", rh.tiny_cfg(run, tiny_qwen2vl_dir, steps=STEPS, checkpoint_every=1,
                                                         keep_last=3, resume="latest"))
    msg = cli_error("train", str(cfg), "--no-progress")
    assert "no intact checkpoint" in msg and all(f"step-00000{s}" in msg for s in (1, 2, 3))


def test_case05_resume_with_another_student_model_is_refused(rh, tmp_path, reference_run, tiny_qwen2vl_dir,
                                                             tiny_qwen3vl_dir, cli_error):
    run = _crashed_copy(reference_run, tmp_path / "run")
    cfg = rh.write_cfg(tmp_path / "c.yaml", rh.tiny_cfg(run, tiny_qwen3vl_dir, steps=STEPS, checkpoint_every=1,
                                                         keep_last=3, resume="latest"))
    msg = cli_error("train", str(cfg), "--no-progress")
    assert "student.path" in msg and "changes what the run in" in msg


@pytest.mark.slow
def test_case05_model_replaced_under_the_same_path_is_one_line(rh, tmp_path, tiny_qwen2vl_dir, tiny_qwen3vl_dir,
                                                               cli_error):
    student = shutil.copytree(tiny_qwen2vl_dir, tmp_path / "student")
    run = tmp_path / "run"
    cfg = rh.tiny_cfg(run, student, steps=3, checkpoint_every=1)
    trainer_mod.train(config_from_dict(cfg), progress=False)
    shutil.rmtree(run / "final")  # as if it crashed after its last checkpoint
    (run / "trainer_state.json").unlink()
    shutil.rmtree(student)
    shutil.copytree(tiny_qwen3vl_dir, student)  # same path, another architecture
    path = rh.write_cfg(tmp_path / "c.yaml", {**cfg, "resume": "latest"})
    msg = cli_error("train", str(path), "--no-progress")
    assert "does not fit the models of this config" in msg


def test_manifest_detects_missing_and_changed_files(tmp_path):
    def write(d):
        (d / "a.bin").write_bytes(b"x" * 1000)
        (d / "sub").mkdir()
        (d / "sub" / "b.bin").write_bytes(b"y" * 10)

    path = save_checkpoint(tmp_path, 1, write)
    assert verify_checkpoint(path) is None
    (path / "sub" / "b.bin").unlink()
    assert verify_checkpoint(path) == "sub/b.bin is missing"
    (path / MANIFEST).write_text("[")
    assert verify_checkpoint(path) == f"{MANIFEST} is unreadable"
    with pytest.raises(ConfigError, match="damaged"):
        resolve_resume(str(path), tmp_path)


def test_manifests_written_with_crc32_are_still_verified(tmp_path):
    """Checkpoints saved before the switch to xxh3 carry CRC-32 manifests: they verify, and damage shows."""
    import json
    import zlib

    path = save_checkpoint(tmp_path, 1, lambda d: (d / "a.bin").write_bytes(b"x" * 5000))
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["algorithm"] == "xxh3_64"
    old = {"algorithm": "crc32", "files": {"a.bin": {"size": 5000, "crc32": zlib.crc32(b"x" * 5000)}}}
    (path / MANIFEST).write_text(json.dumps(old))
    assert verify_checkpoint(path) is None
    (path / "a.bin").write_bytes(b"x" * 4999 + b"y")  # same size, one byte changed
    assert verify_checkpoint(path) == "a.bin fails its crc32 check (damaged)"
    (path / MANIFEST).write_text(json.dumps({**old, "algorithm": "md5"}))
    assert verify_checkpoint(path) == f"{MANIFEST} is unreadable"
