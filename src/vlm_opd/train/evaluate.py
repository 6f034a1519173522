"""Periodic evaluation during training: accuracy (avg@k) and the teacher-scored visual advantage of
the student's own rollouts, so every run yields the paper's VA-vs-accuracy trajectory (Figure 4b)."""

from __future__ import annotations

import torch

from vlm_opd import algorithms as A
from vlm_opd.data import Example
from vlm_opd.train.fsdp import gathered_for_generation


def evaluate_student(ctx, examples: list[Example], seed: int, batch_prompts: int = 16) -> dict[str, float]:
    """Sample `eval.k` completions per example with the student; score accuracy and (optionally) VA.

    Returns `accuracy` in [0, 1] (mean over all completions), and when a vision teacher is present and
    `eval.measure_va`: `mean_va` (over all completion tokens) and `top10_va_share`.
    """
    from vlm_opd.analysis.stats import va_summary
    from vlm_opd.rollout import sample
    from vlm_opd.scoring import teacher_signals

    cfg = ctx.cfg.eval
    lm = ctx.student_for_generation()
    was_training = lm.model.training
    lm.model.eval()
    correct: list[float] = []
    va_rows: list[torch.Tensor] = []
    lengths: list[float] = []
    measure_va = cfg.measure_va and ctx.teacher is not None and ctx.teacher.is_vision and ctx.degrade is not None
    try:
        for start in range(0, len(examples), batch_prompts):
            chunk = examples[start:start + batch_prompts]
            with torch.no_grad(), gathered_for_generation(lm.model):
                rollout = sample(lm, chunk, k=cfg.k, max_new_tokens=cfg.max_new_tokens,
                                 temperature=cfg.temperature, greedy=cfg.greedy, seed=seed + start,
                                 system_prompt=ctx.cfg.data.system_prompt, backend=ctx.rollout_backend,
                                 score_policy=False)
            for b, text in enumerate(rollout.texts):
                ex = chunk[b // rollout.k]
                correct.append(float(ctx.reward_fn(text, ex)) if ex.answer is not None else float("nan"))
            mask = rollout.completion_mask.float()
            lengths.extend(mask.sum(-1).tolist())
            if measure_va:
                with torch.no_grad():
                    sig = teacher_signals(ctx.teacher, rollout, degrade=ctx.degrade, need_hidden=False)
                va = A.visual_advantage(sig.logprobs_real, sig.logprobs_degraded, mask.to(sig.logprobs_real.device))
                va_rows.extend(row[m.bool()].cpu() for row, m in zip(va, mask))
    finally:
        lm.model.train(was_training)
    scored = [c for c in correct if c == c]
    out = {"accuracy": sum(scored) / len(scored) if scored else float("nan"),
           "completion_len": sum(lengths) / max(1, len(lengths)), "n_prompts": float(len(examples))}
    if measure_va and va_rows:
        summary = va_summary(va_rows)
        out["mean_va"] = summary["mean_va"]
        out["top10_va_share"] = summary["top10_va_share"]
    return out
