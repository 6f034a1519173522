"""Training with `rollout.backend: vllm` through the real trainer (vLLM venv only: `make test-vllm`).

OPD and VA-OPD train a few steps with the colocated engine; every rollout's engine log-probs are
compared with the HF student *as it is at that step* (so the engine must have received the weights
of every optimizer step), and the losses are on the scale of the same runs with the HF backend.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vllm_support import build_vllm_tiny, hf_sampler_logprobs, require_vllm  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
require_vllm()

from vlm_opd.config import config_from_dict  # noqa: E402
from vlm_opd.models import build_tiny, load_model  # noqa: E402
from vlm_opd.train import step as step_mod  # noqa: E402
from vlm_opd.train import trainer as trainer_mod  # noqa: E402
from vlm_opd.train.metrics import read_metrics  # noqa: E402

STEPS = 3


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    student = tmp_path_factory.mktemp("student")
    teacher = tmp_path_factory.mktemp("teacher")
    build_vllm_tiny("qwen2_vl", student)
    build_tiny("qwen2_5_vl", teacher, seed=0, eos_boost=3.0)  # same tokenizer; HF only
    return student, teacher


def _cfg(tmp_path, method, backend, student, teacher, **extra):
    return config_from_dict({
        "method": method,
        "output_dir": str(tmp_path / f"{method}-{backend}"),
        "student": {"path": str(student)},
        "teacher": {"path": str(teacher)},
        "data": {"train": "synthetic:8", "eval": "synthetic:2"},
        "rollout": {"k": 2, "max_new_tokens": 8, "backend": backend,
                    "vllm": {"kv_cache_memory_bytes": 32 << 20, "max_model_len": 512, "enforce_eager": True}},
        "optim": {"lr": 2e-2, "schedule": "constant"},
        "prompts_per_step": 2,
        "steps": STEPS,
        "eval": {"every": 0, "k": 1, "max_new_tokens": 6},
        **extra,
    })


@pytest.fixture
def track_rollouts(monkeypatch, model_dirs):
    """Per rollout: max |engine log-prob - HF log-prob| under the current student and the initial one."""
    records = []
    initial = load_model(model_dirs[0])
    real = step_mod.sample_rollouts

    def spy(ctx, examples, seed, **kw):
        rollout = real(ctx, examples, seed, **kw)
        if ctx.rollout_backend is not None:
            m = rollout.completion_mask.bool()
            current = hf_sampler_logprobs(ctx.student_for_generation(), rollout)
            first = hf_sampler_logprobs(initial, rollout)
            records.append({
                "to_current": float((rollout.sampler_logprobs - current)[m].abs().max()),
                "to_initial": float((rollout.sampler_logprobs - first)[m].abs().max()),
                "updates": ctx.rollout_backend.weight_updates,
            })
        return rollout

    monkeypatch.setattr(step_mod, "sample_rollouts", spy)
    return records


def _losses(result):
    rows = [r for r in read_metrics(result.metrics_path) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    return [r["loss"] for r in rows]


@pytest.mark.parametrize("method", ["opd", "va_opd"])
def test_training_with_vllm_rollouts_tracks_the_student_and_matches_hf_loss_scale(
        tmp_path, model_dirs, track_rollouts, method):
    student, teacher = model_dirs
    hf = trainer_mod.train(_cfg(tmp_path, method, "hf", student, teacher), progress=False)
    assert track_rollouts == []  # the HF run has no engine
    vl = trainer_mod.train(_cfg(tmp_path, method, "vllm", student, teacher), progress=False)

    # One rollout per step; the engine took the weights before the first rollout and after every step.
    assert [r["updates"] for r in track_rollouts] == [1, 2, 3]
    for i, r in enumerate(track_rollouts):
        assert r["to_current"] < 1e-4, f"step {i + 1}: engine log-probs differ from the current student: {r}"
    assert track_rollouts[-1]["to_initial"] > 1e-2, "the student did not move; the test proves nothing"

    hf_loss, vl_loss = _losses(hf), _losses(vl)
    assert all(torch.isfinite(torch.tensor(vl_loss)))
    # Step 1 starts both runs from the same weights (different random streams, same distribution), so
    # its losses must be on one scale; later steps follow two different trajectories at a high lr.
    ratio = vl_loss[0] / hf_loss[0]
    assert 0.5 < ratio < 2.0, (hf_loss, vl_loss)
    # the final eval sampled through the engine too
    evals = [r for r in read_metrics(vl.metrics_path) if "eval/accuracy" in r]
    assert evals and 0.0 <= evals[-1]["eval/accuracy"] <= 1.0


def test_grpo_runs_with_vllm_rollouts(tmp_path, model_dirs, track_rollouts):
    """The policy-gradient family samples through the same path (old log-probs stay the HF student's)."""
    student, teacher = model_dirs
    cfg = _cfg(tmp_path, "grpo", "vllm", student, teacher, steps=2)
    result = trainer_mod.train(cfg, progress=False)
    losses = [r["loss"] for r in read_metrics(result.metrics_path) if "loss" in r]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert [r["updates"] for r in track_rollouts] == [1, 2]
    assert all(r["to_current"] < 1e-4 for r in track_rollouts)


def test_stages_each_get_an_engine_and_the_previous_one_is_closed(tmp_path, model_dirs, monkeypatch):
    """SFT then OPD (stages:), both with rollout.backend=vllm: the second stage's engine starts from the
    first stage's final weights, and the first stage's engine is shut down."""
    from vlm_opd.rollout import vllm_backend

    closed = []
    real_close = vllm_backend.VLLMBackend.close
    monkeypatch.setattr(vllm_backend.VLLMBackend, "close", lambda self: (closed.append(self._llm is not None),
                                                                          real_close(self)))
    student, teacher = model_dirs
    base = _cfg(tmp_path, "opd", "vllm", student, teacher)
    from vlm_opd.config import config_to_dict

    raw = config_to_dict(base)
    raw["stages"] = [{"method": "sft", "steps": 1, "sft": {"max_length": 16}}, {"method": "opd", "steps": 2}]
    result = trainer_mod.train(config_from_dict(raw), progress=False)
    assert closed == [True, True]  # both stages' engines ran (final eval samples) and were closed
    assert result.steps == 2


def test_multi_process_vllm_training_is_refused(tmp_path, model_dirs):
    from vlm_opd.errors import ConfigError
    from vlm_opd.rollout.vllm_backend import training_backend

    student, teacher = model_dirs
    cfg = _cfg(tmp_path, "opd", "vllm", student, teacher)
    with pytest.raises(ConfigError, match="one process"):
        training_backend(cfg, torch.nn.Linear(2, 2), 2, [])
