"""benchmarks/fsdp_sampling.py runs (2 CPU processes) and reports both ways side by side."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fsdp_sampling.py"


@pytest.mark.slow
def test_fsdp_sampling_benchmark_prints_one_json(tiny_qwen2vl_dir):
    res = subprocess.run([sys.executable, str(SCRIPT), "--model", str(tiny_qwen2vl_dir), "--new", "8", "--repeats", "1",
                          "--rows", "2"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-8000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["processes"] == 2 and out["new_tokens_rank0"] == 8
    assert out["gathered_s"] > 0 and out["lockstep_s"] > 0
    assert out["gathered_extra_mib"] == pytest.approx(out["shard_mib"], rel=0.01)  # 2 processes: the other half
