"""One VA-OPD step body: the teacher's real and degraded passes, batched or not, give the same loss."""

from __future__ import annotations

import pytest
import torch

from vlm_opd import scoring
from vlm_opd.config import config_from_dict
from vlm_opd.data.degrade import pixelate
from vlm_opd.models import load_model
from vlm_opd.rollout import sample
from vlm_opd.scoring import teacher_signals
from vlm_opd.train import step as step_mod


@pytest.fixture
def va_step(tiny_qwen2vl, tiny_qwen2vl_dir, tiny_examples, monkeypatch):
    student = load_model(tiny_qwen2vl_dir)
    examples = tiny_examples[:4]
    rollout = sample(student, examples, k=2, max_new_tokens=8, temperature=1.0, seed=0)
    monkeypatch.setattr(step_mod, "sample_rollouts", lambda ctx, ex, seed, k=None: rollout)
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("batch_real_and_degraded"))
        return teacher_signals(*args, **kwargs)

    monkeypatch.setattr(scoring, "teacher_signals", spy)  # distill_loss imports it at call time

    def run(batched):
        cfg = config_from_dict({"method": "va_opd", "student": {"path": "s"}, "teacher": {"path": "t"},
                                "data": {"train": "d"}, "rollout": {"k": 2},
                                "va_opd": {"batch_real_and_degraded": batched}})
        ctx = step_mod.StepContext(cfg=cfg, student=student, student_for_generation=lambda: student,
                                   teacher=tiny_qwen2vl, degrade=pixelate)
        loss, diags = step_mod.distill_loss(ctx, examples, 0)
        return loss.detach(), diags

    return run, calls


def test_batched_and_separate_teacher_passes_agree(va_step):
    run, calls = va_step
    (l_b, d_b), (l_s, d_s), (l_a, _) = run(True), run(False), run(None)
    assert calls == [True, False, False]  # null picks two forwards on CPU
    torch.testing.assert_close(l_b, l_s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(l_a, l_s, atol=0, rtol=0)
    assert d_b["mean_va"] == pytest.approx(d_s["mean_va"], abs=1e-5)
    assert d_s["mean_va"] != 0.0


def test_teacher_shift_and_positive_group_are_wired_through_the_step(tiny_qwen2vl, tiny_qwen2vl_dir, tiny_examples,
                                                                     monkeypatch):
    """va_opd.va_kind=teacher_shift, high_group=positive and va_floor reach the loss: the step's loss equals
    the one rebuilt from the teacher's hidden states with the pure functions."""
    from vlm_opd import algorithms as A

    student = load_model(tiny_qwen2vl_dir)
    examples = tiny_examples[:4]
    rollout = sample(student, examples, k=2, max_new_tokens=8, temperature=1.0, seed=0)
    monkeypatch.setattr(step_mod, "sample_rollouts", lambda ctx, ex, seed, k=None: rollout)
    cfg = config_from_dict({"method": "va_opd", "student": {"path": "s"}, "teacher": {"path": "t"},
                            "data": {"train": "d"}, "rollout": {"k": 2},
                            "va_opd": {"va_kind": "teacher_shift", "high_group": "positive", "va_floor": 0.01}})
    ctx = step_mod.StepContext(cfg=cfg, student=student, student_for_generation=lambda: student,
                               teacher=tiny_qwen2vl, degrade=pixelate)
    loss, diags = step_mod.distill_loss(ctx, examples, 0)

    with torch.no_grad():
        sig = teacher_signals(tiny_qwen2vl, rollout, degrade=pixelate, need_hidden=True, batch_real_and_degraded=False,
                              need_hidden_degraded=True)
        mask = rollout.completion_mask.float()
        va = A.floor_va(A.teacher_shift_va(sig.hidden_real, sig.hidden_degraded, sig.lm_head_weight, mask), 0.01)
        per_token = step_mod.per_token_divergence(ctx, rollout, sig.hidden_real, sig.logprobs_real, sig.lm_head_weight)
    pk = rollout.view_pk
    ref, ref_diags = A.va_opd_loss(pk(per_token), pk(va), pk(mask), high_group="positive")
    torch.testing.assert_close(loss.detach(), ref, atol=1e-6, rtol=1e-6)
    assert diags["mean_va"] == pytest.approx(ref_diags["mean_va"], rel=1e-5)
    assert diags["frac_high_va_zero"] == 0.0
    assert 0 < diags["frac_va_positive"] < 1  # the floor zeroed some positions and kept others
    # The position-level VA is not the paper's sampled-token VA.
    sampled = A.visual_advantage(sig.logprobs_real, sig.logprobs_degraded, mask)
    assert not torch.allclose(va, sampled)
