"""Every method runs end to end on tiny models through the real trainer."""

from __future__ import annotations

import json

import pytest
import torch

from vlm_opd.config import config_from_dict
from vlm_opd.train import trainer as trainer_mod
from vlm_opd.train.metrics import read_metrics


def _cfg(tmp_path, method, student_dir, teacher_dir=None, **extra):
    cfg = {
        "method": method,
        "output_dir": str(tmp_path / method),
        "student": {"path": str(student_dir)},
        "data": {"train": "synthetic:8", "eval": "synthetic:2"},
        "rollout": {"k": 2, "max_new_tokens": 6},
        "optim": {"lr": 1e-2, "schedule": "constant"},
        "prompts_per_step": 2,
        "steps": 3,
        "eval": {"every": 0, "k": 1, "max_new_tokens": 6},
        "sft": {"max_length": 24},
    }
    if teacher_dir is not None:
        cfg["teacher"] = {"path": str(teacher_dir)}
    for key, value in extra.items():
        cfg[key] = value
    return config_from_dict(cfg)


def _state(path):
    from vlm_opd.models import load_model

    return {k: v.clone() for k, v in load_model(path).model.state_dict().items()}


@pytest.fixture
def capture_teacher(monkeypatch):
    """Record the teacher's weights when the trainer loads it, to check they never change."""
    loaded = []
    real_load = trainer_mod._load

    def spy(mcfg, device):
        lm = real_load(mcfg, device)
        loaded.append((mcfg.path, lm, {k: v.clone() for k, v in lm.model.state_dict().items()}))
        return lm

    monkeypatch.setattr(trainer_mod, "_load", spy)
    return loaded


METHODS = {
    "sft": None, "kd": "vlm", "opd": "vlm", "va_opd": "vlm", "grpo": None, "papo": None, "vold": "lm",
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_runs_and_trains_only_the_student(tmp_path, method, tiny_qwen2vl_dir, tiny_qwen25vl_dir,
                                                 tiny_qwen3_lm_dir, capture_teacher, monkeypatch):
    teacher = {"vlm": tiny_qwen25vl_dir, "lm": tiny_qwen3_lm_dir, None: None}[METHODS[method]]
    if method in ("grpo", "papo", "vold"):
        _varied_rewards(monkeypatch)
    cfg = _cfg(tmp_path, method, tiny_qwen2vl_dir, teacher)
    result = trainer_mod.train(cfg, progress=False)
    rows = [r for r in read_metrics(result.metrics_path) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["loss"] is not None and torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    evals = [r for r in read_metrics(result.metrics_path) if "eval/accuracy" in r]
    assert evals and 0.0 <= evals[-1]["eval/accuracy"] <= 1.0
    before, after = _state(tiny_qwen2vl_dir), _state(result.final_dir)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no student parameter changed"
    for path, lm, snapshot in capture_teacher:
        if teacher is not None and str(path) == str(teacher):
            for k, v in lm.model.state_dict().items():
                assert torch.equal(v, snapshot[k]), f"teacher parameter {k} changed"
    if method == "va_opd":
        assert {"mean_va", "top10_va_share", "weight_entropy"} <= set(rows[0])
    if method in ("grpo", "papo", "vold"):
        assert "reward" in rows[0]


def _weights(path):
    return _state(path)


def _assert_close_weights(a_dir, b_dir, atol):
    a, b = _weights(a_dir), _weights(b_dir)
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, f"max weight difference {worst}"
    return worst


def _varied_rewards(monkeypatch):
    # A random tiny model never answers correctly: give rewards that vary within each group so the
    # policy gradient is not identically zero (deterministic in the text).
    monkeypatch.setattr(trainer_mod, "_reward_fn", lambda cfg, get: lambda text, ex: float(sum(map(ord, text)) % 2))


@pytest.mark.parametrize("method", ["opd", "va_opd", "grpo"])
def test_grad_accumulation_equals_larger_batch(tmp_path, method, tiny_qwen2vl_dir, tiny_qwen25vl_dir, monkeypatch):
    # grpo's dapo loss is the token mean over the whole update, so unequal micro-batches add up exactly.
    _varied_rewards(monkeypatch)
    # Adam's first steps are sign-like (g / |g|), which turns float-rounding noise in near-zero gradients
    # into lr-sized differences; a large eps makes the update proportional to the gradient instead, so
    # the comparison checks the gradients themselves.
    common = dict(prompts_per_step=4, steps=2,
                  optim={"lr": 1.0, "eps": 1.0, "schedule": "constant", "max_grad_norm": None},
                  data={"train": "synthetic:8"})
    one = _cfg(tmp_path / "one", method, tiny_qwen2vl_dir, tiny_qwen25vl_dir, grad_accum=1, **common)
    two = _cfg(tmp_path / "two", method, tiny_qwen2vl_dir, tiny_qwen25vl_dir, grad_accum=2, **common)
    r1 = trainer_mod.train(one, progress=False)
    r2 = trainer_mod.train(two, progress=False)
    init, w1 = _state(tiny_qwen2vl_dir), _weights(r1.final_dir)
    moved = max((w1[k].float() - init[k].float()).abs().max().item() for k in w1)
    assert moved > 1e-3, "the update is trivially small"
    _assert_close_weights(r1.final_dir, r2.final_dir, atol=1e-4 * moved)


@pytest.mark.parametrize("method", ["grpo", "papo"])
def test_ppo_epochs_and_mini_batches_make_several_off_policy_updates(tmp_path, method, tiny_qwen2vl_dir, monkeypatch):
    _varied_rewards(monkeypatch)
    updates = []
    real_step = torch.optim.AdamW.step

    def counting_step(self, *args, **kwargs):
        updates.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    cfg = _cfg(tmp_path, method, tiny_qwen2vl_dir, prompts_per_step=4, steps=2, log_every=1, grad_accum=2,
               grpo={"ppo_epochs": 2, "mini_batches": 2, "clip_eps": 0.05},
               optim={"lr": 5e-2, "schedule": "constant"})
    result = trainer_mod.train(cfg, progress=False)
    assert len(updates) == 2 * 4  # steps x ppo_epochs x mini_batches
    rows = [r for r in read_metrics(result.metrics_path) if "loss" in r]
    assert [r["ppo_updates"] for r in rows] == [4.0, 4.0]
    # Later updates score rows with a policy that has moved since sampling: ratio != 1, the clip acts.
    # (A step whose rewards are all equal has no policy gradient and stays on-policy.)
    assert any(abs(r["ratio_mean"] - 1.0) > 1e-4 and r["approx_kl"] != 0.0 for r in rows)
    assert max(r["clip_frac"] for r in rows) > 0.0
    # `tokens` counts each micro-batch's rollouts once (2 prompts x 2 samples), not once per update
    assert rows[0]["tokens"] == pytest.approx(2 * 2 * rows[0]["completion_len"], rel=1e-6)

    single = trainer_mod.train(_cfg(tmp_path / "one", method, tiny_qwen2vl_dir, prompts_per_step=4, steps=1,
                                    log_every=1), progress=False)
    (row,) = [r for r in read_metrics(single.metrics_path) if "loss" in r]
    assert row["ratio_mean"] == 1.0 and row["clip_frac"] == 0.0 and "ppo_updates" not in row


def test_resume_after_interruption_matches_uninterrupted(tmp_path, tiny_qwen2vl_dir, tiny_qwen25vl_dir, monkeypatch):
    common = dict(steps=4, checkpoint_every=2, keep_last=3)
    full = trainer_mod.train(_cfg(tmp_path / "full", "va_opd", tiny_qwen2vl_dir, tiny_qwen25vl_dir, **common),
                             progress=False)

    cut_cfg = _cfg(tmp_path / "cut", "va_opd", tiny_qwen2vl_dir, tiny_qwen25vl_dir, **common)
    real = trainer_mod.STEP_FUNCTIONS["va_opd"]
    calls = {"n": 0}

    def crash_on_third(ctx, examples, seed):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash in step 3")
        return real(ctx, examples, seed)

    monkeypatch.setitem(trainer_mod.STEP_FUNCTIONS, "va_opd", crash_on_third)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer_mod.train(cut_cfg, progress=False)
    monkeypatch.setitem(trainer_mod.STEP_FUNCTIONS, "va_opd", real)
    resumed = trainer_mod.train(config_from_dict({**json.loads(json.dumps(cut_cfg.__dict__, default=lambda o: o.__dict__)),
                                                  "resume": "latest"}), progress=False)
    _assert_close_weights(full.final_dir, resumed.final_dir, atol=0.0)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("wall_s", "step_time_s", "tokens_per_s",
                                                                  "peak_memory_mb")} for r in rows]
    assert strip(read_metrics(full.metrics_path)) == strip(read_metrics(resumed.metrics_path))


def test_resume_skips_a_finished_stage_and_keeps_logs_single(tmp_path, tiny_qwen2vl_dir, tiny_qwen25vl_dir, monkeypatch,
                                                             capsys):
    """A chained config whose second stage crashed: resume=latest continues the second stage from its
    checkpoint and does not retrain the finished first one (before: it started that stage over)."""
    cfg = {"method": "sft", "output_dir": str(tmp_path / "run"), "student": {"path": str(tiny_qwen2vl_dir)},
           "teacher": {"path": str(tiny_qwen25vl_dir)}, "data": {"train": "synthetic:8"},
           "rollout": {"k": 2, "max_new_tokens": 6}, "sft": {"max_length": 24}, "prompts_per_step": 2,
           "steps": 3, "checkpoint_every": 1, "sample_every": 1,
           "stages": [{"method": "sft"}, {"method": "opd"}]}
    calls = {"sft": 0, "opd": 0}
    real = dict(trainer_mod.STEP_FUNCTIONS)

    def counting(method, crash_at=None):
        def step(ctx, examples, seed):
            calls[method] += 1
            if calls[method] == crash_at:
                raise RuntimeError("simulated crash")
            return real[method](ctx, examples, seed)
        return step

    monkeypatch.setitem(trainer_mod.STEP_FUNCTIONS, "sft", counting("sft"))
    monkeypatch.setitem(trainer_mod.STEP_FUNCTIONS, "opd", counting("opd", crash_at=3))
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer_mod.train(config_from_dict(cfg), progress=False)
    stage0 = tmp_path / "run" / "stage0-sft"
    before = (stage0 / "metrics.jsonl").read_text()
    # stage 1's newest checkpoint is damaged: it falls back to step 1, after which step 2's samples were logged
    (tmp_path / "run" / "stage1-opd" / "checkpoints" / "step-000002" / "trainer_state.json").write_text("{}")
    calls.update(sft=0, opd=0)
    monkeypatch.setitem(trainer_mod.STEP_FUNCTIONS, "opd", counting("opd"))
    result = trainer_mod.train(config_from_dict({**cfg, "resume": "latest"}), progress=False)
    assert calls == {"sft": 0, "opd": 2}  # stage 0 untouched; stage 1 redid steps 2 and 3
    assert "finished at step 3" in capsys.readouterr().err
    assert (stage0 / "metrics.jsonl").read_text() == before
    assert [r["step"] for r in read_metrics(result.metrics_path) if "loss" in r] == [1, 2, 3]
    samples = [json.loads(line)["step"] for line in (tmp_path / "run" / "stage1-opd" / "samples.jsonl").read_text().splitlines()]
    assert samples == sorted(samples) and samples.count(2) == samples.count(1)  # step 2 not logged twice
