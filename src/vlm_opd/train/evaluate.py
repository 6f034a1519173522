"""Periodic evaluation during training: accuracy (avg@k) and the teacher-scored visual advantage of
the student's own rollouts, so every run yields the paper's VA-vs-accuracy trajectory (Figure 4b).

With several processes the batches are shared out (batch i to process i mod N) and the results gathered,
so evaluation takes 1/N of the time on each; every batch keeps the seed it has on one process (rollouts
are keyed by seed and prompt), so the numbers equal a one-process evaluation's.
"""

from __future__ import annotations

import math

import torch

from vlm_opd import algorithms as A
from vlm_opd.data import Example
from vlm_opd.train.fsdp import gathered, is_sharded


def evaluate_student(ctx, examples: list[Example], seed: int, batch_prompts: int = 16, *,
                     rank: int = 0, nproc: int = 1) -> dict[str, float]:
    """Sample `eval.k` completions per example with the student; score accuracy and (optionally) VA.

    Every process calls this with the same arguments and its `rank` (of `nproc`); each evaluates its share
    of the batches and all of them return the same result. Returns `accuracy` in [0, 1] (mean over all
    completions), and when a vision teacher is present and `eval.measure_va`: `mean_va` (over all
    completion tokens) and `top10_va_share`.
    """
    from vlm_opd.analysis.stats import va_summary

    cfg = ctx.cfg.eval
    measure_va = cfg.measure_va and ctx.teacher is not None and ctx.teacher.is_vision and ctx.degrade is not None
    starts = list(range(0, len(examples), batch_prompts))
    mine = starts[rank::nproc]
    # A sharded teacher's forwards are collectives: every process scores as many batches (one with fewer
    # batches repeats one, and drops its result).
    rounds = math.ceil(len(starts) / nproc) if measure_va and is_sharded(ctx.teacher.model) else len(mine)
    lm = ctx.student_for_generation()
    was_training = lm.model.training
    lm.model.eval()
    results: dict[int, tuple[list[float], list[float], list[torch.Tensor]]] = {}
    try:
        for r in range(rounds):
            start = mine[r] if r < len(mine) else (mine or starts)[0]
            out = _evaluate_batch(ctx, lm, examples[start:start + batch_prompts], seed + start, measure_va)
            if r < len(mine):
                results[start] = out
    finally:
        lm.model.train(was_training)
    if nproc > 1:
        import torch.distributed as dist

        shared: list[dict] = [{} for _ in range(nproc)]
        dist.all_gather_object(shared, results)
        results = {k: v for part in shared for k, v in part.items()}
    correct, lengths, va_rows = [], [], []
    for start in starts:  # in batch order, as one process would have produced them
        c, n, v = results[start]
        correct += c
        lengths += n
        va_rows += v
    scored = [c for c in correct if c == c]
    out = {"accuracy": sum(scored) / len(scored) if scored else float("nan"),
           "completion_len": sum(lengths) / max(1, len(lengths)), "n_prompts": float(len(examples))}
    if measure_va and va_rows:
        summary = va_summary(va_rows)
        out["mean_va"] = summary["mean_va"]
        out["top10_va_share"] = summary["top10_va_share"]
    return out


def _evaluate_batch(ctx, lm, chunk: list[Example], seed: int, measure_va: bool):
    """(per-completion correctness, completion lengths, per-row VA of the completion tokens) of one batch."""
    from vlm_opd.rollout import sample
    from vlm_opd.scoring import teacher_signals

    cfg = ctx.cfg.eval
    with torch.no_grad(), gathered(lm.model):
        rollout = sample(lm, chunk, k=cfg.k, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                         greedy=cfg.greedy, seed=seed, system_prompt=ctx.cfg.data.system_prompt,
                         backend=ctx.rollout_backend, score_policy=False)
    correct = []
    for b, text in enumerate(rollout.texts):
        ex = chunk[b // rollout.k]
        correct.append(float(ctx.reward_fn(text, ex)) if ex.answer is not None else float("nan"))
    mask = rollout.completion_mask.float()
    lengths = mask.sum(-1).tolist()
    va_rows = []
    if measure_va:
        with torch.no_grad():
            sig = teacher_signals(ctx.teacher, rollout, degrade=ctx.degrade, need_hidden=False)
        va = A.visual_advantage(sig.logprobs_real, sig.logprobs_degraded, mask.to(sig.logprobs_real.device))
        va_rows = [row[m.bool()].cpu() for row, m in zip(va, mask)]
    return correct, lengths, va_rows
