"""benchmarks/gpu_acceptance.py on the CPU: argument checks, the refusal without a GPU, the JSON on tiny models."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_acceptance.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_defaults_are_paper_shapes_and_bad_values_are_named(capsys):
    acc = _module()
    a = acc.parse_args([])
    assert (a.device, a.k, a.new, a.tiny, a.student_preset, a.teacher_preset) == (
        "cuda", 4, 256, False, "qwen3_vl_2b", "qwen3_vl_8b")
    for bad, name in ((["--k", "0"], "--k"), (["--new", "-1"], "--new"), (["--lr", "0"], "--lr")):
        with pytest.raises(SystemExit):
            acc.parse_args(bad)
        assert name in capsys.readouterr().err


def test_refusal_rules():
    acc = _module()
    assert "no CUDA GPU" in acc.refusal(acc.parse_args([]), cuda_available=False)
    assert acc.refusal(acc.parse_args([]), cuda_available=True) is None
    assert "--tiny" in acc.refusal(acc.parse_args(["--device", "cpu"]), cuda_available=False)
    assert acc.refusal(acc.parse_args(["--device", "cpu", "--tiny"]), cuda_available=False) is None
    assert "not supported" in acc.refusal(acc.parse_args(["--device", "mps"]), cuda_available=False)


def test_refuses_in_one_line_without_a_gpu():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("USDT")]
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and "--device cpu --tiny" in lines[0]
    assert proc.stdout == ""


@pytest.mark.slow
def test_tiny_cpu_run_prints_every_key(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--k", "2", "--new", "8", "--steps", "2",
         "--repeats", "1", "--image-size", "64", "--work-dir", str(tmp_path)],
        capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    acc = _module()
    assert set(out) == set(acc.JSON_KEYS)
    assert out["device"] == "cpu" and out["tiny"] is True and out["k"] == 2
    assert set(out["step_time_s"]) == {"va_opd", "opd", "va_opd_fp32_ref"}
    assert 0 <= out["moved_frac"] <= 1 and out["slice_params"] > 0
    assert out["moved_frac_fp32_ref"] > 0  # the float32 reference always moves at lr 1e-5
    assert out["rollout_tokens_per_s"] > 0 and out["t_teacher_forward_s"] > 0
    assert 0 < out["loss_memory_ratio"] < 1  # chunked below naive even at tiny shapes
    # The trainer keeps float32 master weights for a bf16 student: its update matches the float32 run's
    # in size. Plain AdamW on bf16 parameters gave a norm ratio of 0.71 here and fails this.
    assert out["weights_moved"] is True, out
    assert out["update_norm_ratio_vs_fp32"] > 0.8
