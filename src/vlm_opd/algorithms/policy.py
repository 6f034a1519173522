"""Policy-gradient baselines: GRPO / DAPO surrogate, reference KL, PAPO's perception term, VOLD.

Shapes: `B` sequences (rollouts), `T` completion positions, `P` prompts with `K` rollouts each.
`mask` is 1 for completion tokens; values at masked positions are ignored.
"""

from __future__ import annotations

import math

import torch

from vlm_opd.algorithms._checks import (
    as_valid,
    check_choice,
    check_float,
    check_ndim,
    check_nonnegative,
    check_positive,
    check_real,
    check_same_shape,
    compute_dtype,
)
from vlm_opd.algorithms.divergences import sampled_token_kl

POLICY_LOSS_TYPES = ("dapo", "grpo")
VOLD_DISTILL_ON = ("all", "failed")

# exp(log-ratio) overflows float32 past ~88; +-20 (ratio 2e-9 .. 5e8) is far outside any clip
# range, so clamping there changes nothing that PPO clipping would not already cut.
_MAX_LOG_RATIO = 20.0
# k3 = exp(d) - d - 1 is clamped anyway (PAPO); capping d first keeps exp finite so the clamped
# region gets a zero gradient instead of 0 * inf = NaN.
_MAX_K3_LOG_RATIO = 50.0


def _zeroed(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return torch.where(valid, x, torch.zeros_like(x))


def _token_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over all valid tokens of the batch (DAPO / token-level normalisation)."""
    return _zeroed(x, valid).sum() / valid.sum().clamp_min(1).to(x.dtype)


def _sequence_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-sequence token mean, then mean over sequences (GRPO normalisation)."""
    per_seq = _zeroed(x, valid).sum(-1) / valid.sum(-1).clamp_min(1).to(x.dtype)
    return per_seq.sum() / max(per_seq.numel(), 1)


def grpo_advantages(rewards: torch.Tensor, eps: float = 1e-6, scale: bool = True) -> torch.Tensor:
    """Group-relative advantages: reward minus the group mean, divided by (unbiased std + eps).

    Args:
        rewards: `[P, K]` one scalar reward per rollout (float, integer or bool).
        eps: added to the std, >= 0.
        scale: divide by the std (GRPO); False gives Dr.GRPO-style centred rewards.

    Returns:
        `[P, K]` float32 (float64 for float64 input), detached; K == 1 gives 0.
    """
    fn = "grpo_advantages"
    check_real(fn, "rewards", rewards)
    check_ndim(fn, "rewards", rewards, 2, "[P, K]")
    check_nonnegative(fn, "eps", eps)
    r = rewards.detach().to(torch.float64 if rewards.dtype == torch.float64 else torch.float32)
    if r.shape[-1] <= 1:
        return torch.zeros_like(r)
    centred = r - r.mean(-1, keepdim=True)
    if not scale:
        return centred
    denom = r.std(-1, keepdim=True) + eps
    return torch.where(denom > 0, centred / denom.clamp_min(torch.finfo(r.dtype).tiny), torch.zeros_like(r))


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    loss_type: str = "dapo",
    token_normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip surrogate: `-min(r * A, clip(r, 1 - clip_eps, 1 + clip_eps_high) * A)` per token.

    Args:
        logprobs: `[B, T]` current policy log-probs of the sampled tokens (with gradient).
        old_logprobs: `[B, T]` behaviour-policy log-probs (detached).
        advantages: `[B]` per-sequence advantages broadcast over tokens (or `[B, T]`).
        mask: `[B, T]` 1 for completion tokens.
        clip_eps: lower clip range (and upper when clip_eps_high is None).
        clip_eps_high: upper clip range (DAPO's clip-higher), defaults to clip_eps.
        loss_type: "dapo" token mean over the whole batch; "grpo" per-sequence token mean, then
            mean over sequences.
        token_normalizer: "dapo" only: divide the token sum by this instead of this batch's token
            count. A trainer splitting one update into micro-batches (and processes) passes the
            update's total token count / (micro-batches x processes), so the accumulated gradient
            is the token mean over the whole update rather than a mean of per-micro-batch means.

    Returns:
        (scalar loss, diagnostics): `clip_frac` (valid tokens where the clipped term is the one
        used), `clip_frac_low`, `clip_frac_high`, `ratio_mean`, `approx_kl` (token mean of
        old - new log-prob).
    """
    fn = "policy_loss"
    check_choice(fn, "loss_type", loss_type, POLICY_LOSS_TYPES)
    check_float(fn, "logprobs", logprobs)
    check_float(fn, "old_logprobs", old_logprobs)
    check_float(fn, "advantages", advantages)
    check_ndim(fn, "logprobs", logprobs, 2, "[B, T]")
    check_same_shape(fn, "logprobs", logprobs, "old_logprobs", old_logprobs)
    valid = as_valid(fn, mask, logprobs, "logprobs")
    check_nonnegative(fn, "clip_eps", clip_eps)
    if clip_eps_high is None:
        clip_eps_high = clip_eps
    check_nonnegative(fn, "clip_eps_high", clip_eps_high)
    if advantages.shape == logprobs.shape[:1]:
        adv = advantages.unsqueeze(-1)
    elif advantages.shape == logprobs.shape:
        adv = advantages
    else:
        raise ValueError(
            f"{fn}: advantages has shape {tuple(advantages.shape)} but logprobs has shape "
            f"{tuple(logprobs.shape)}; expected [B] or [B, T]"
        )
    dt = compute_dtype(logprobs, old_logprobs, advantages)
    adv = adv.detach().to(dt)
    log_ratio = _zeroed(logprobs.to(dt) - old_logprobs.detach().to(dt), valid)
    ratio = log_ratio.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO).exp()
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps_high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    if loss_type == "grpo":
        loss = _sequence_mean(per_token, valid)
    elif token_normalizer is None:
        loss = _token_mean(per_token, valid)
    else:
        if not (math.isfinite(token_normalizer) and token_normalizer > 0):
            raise ValueError(f"{fn}: token_normalizer must be a positive number, got {token_normalizer!r}")
        loss = _zeroed(per_token, valid).sum() / token_normalizer

    with torch.no_grad():
        r = ratio.detach()
        low = valid & (adv < 0) & (r < 1.0 - clip_eps)
        high = valid & (adv > 0) & (r > 1.0 + clip_eps_high)
        n = max(int(valid.sum()), 1)
        diags = {
            "clip_frac": float((low | high).sum()) / n,
            "clip_frac_low": float(low.sum()) / n,
            "clip_frac_high": float(high.sum()) / n,
            "ratio_mean": float(_zeroed(r, valid).sum()) / n,
            "approx_kl": float(-_zeroed(log_ratio.detach(), valid).sum()) / n,
        }
    return loss, diags


def kl_penalty(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    estimator: str = "k3",
) -> torch.Tensor:
    """GRPO's KL to a reference policy: token mean over the batch of `sampled_token_kl`.

    Args:
        logprobs: `[B, T]` current policy log-probs of the sampled tokens (with gradient).
        ref_logprobs: `[B, T]` reference-policy log-probs (detached).
        mask: `[B, T]` 1 for completion tokens.
        estimator: "k1", "k2" or "k3" (k3 = exp(ref - lp) - (ref - lp) - 1, as in GRPO).

    Returns:
        scalar tensor.
    """
    fn = "kl_penalty"
    valid = as_valid(fn, mask, logprobs, "logprobs")
    per_token = sampled_token_kl(logprobs, ref_logprobs, estimator=estimator)
    return _token_mean(per_token, valid)


def papo_perception_loss(
    logprobs: torch.Tensor,
    logprobs_masked: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 0.01,
    kl_clamp: float = 10.0,
    entropy: torch.Tensor | None = None,
    entropy_masked: torch.Tensor | None = None,
    entropy_coef: float = 0.03,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PAPO's extra loss terms (arXiv 2507.06448), to be added to the GRPO/DAPO loss.

    Implicit perception loss: the per-token k3 estimate of KL(pi(.|image) || pi(.|masked image))
    on the sampled tokens, `k3 = exp(d) - d - 1` with `d = lp_masked - lp`, clamped at
    `kl_clamp`, token-averaged over the batch and *maximised*: the term is `-gamma * mean(k3)`.
    The masked branch is detached inside this term. This follows the authors' verl code
    (`compute_kl(log_probs, aug_log_probs, "low_var_kl")`, clamped to +-10, subtracted with
    coefficient `kl_prcp_coef` = 0.01, 0.02 for the "high" setting).

    Double entropy regulariser: `+ entropy_coef * (mean H(orig) + mean H(masked))`, penalising
    both entropies so the perception term cannot be gamed by a collapsing distribution.
    `entropy` / `entropy_masked` are `[B, T]` per-token entropies (full-vocabulary, e.g. from
    `chunked_token_logprobs(..., return_entropy=True)`); when None the sampled-token estimate
    `-log p(y_t)` of the matching log-probs is used, as in the authors' code. They are used as
    given: the authors compute the masked branch without gradient, so there the masked-entropy
    term is a constant; pass detached tensors to reproduce that exactly.

    Args:
        logprobs: `[B, T]` policy log-probs of the sampled tokens given the original image.
        logprobs_masked: `[B, T]` the same given the masked image.
        mask: `[B, T]` 1 for completion tokens.
        gamma: perception-loss weight, >= 0.
        kl_clamp: upper clamp of the per-token k3 value, > 0.
        entropy, entropy_masked: optional `[B, T]` per-token entropies.
        entropy_coef: weight of each entropy term, >= 0 (0 disables the regulariser).

    Returns:
        (scalar loss term, diagnostics): `perception_kl` (clamped token mean),
        `perception_kl_clamped_frac`, `entropy`, `entropy_masked` (token means).
    """
    fn = "papo_perception_loss"
    check_float(fn, "logprobs", logprobs)
    check_float(fn, "logprobs_masked", logprobs_masked)
    check_same_shape(fn, "logprobs", logprobs, "logprobs_masked", logprobs_masked)
    valid = as_valid(fn, mask, logprobs, "logprobs")
    check_nonnegative(fn, "gamma", gamma)
    check_positive(fn, "kl_clamp", kl_clamp)
    check_nonnegative(fn, "entropy_coef", entropy_coef)
    for name, t in (("entropy", entropy), ("entropy_masked", entropy_masked)):
        if t is not None:
            check_float(fn, name, t)
            check_same_shape(fn, "logprobs", logprobs, name, t)
    dt = compute_dtype(logprobs, logprobs_masked, entropy, entropy_masked)
    lp = logprobs.to(dt)
    d = _zeroed(logprobs_masked.detach().to(dt) - lp, valid).clamp(max=_MAX_K3_LOG_RATIO)
    k3 = torch.expm1(d) - d
    k3_clamped = k3.clamp(max=kl_clamp)
    perception_kl = _token_mean(k3_clamped, valid)

    h = -lp if entropy is None else entropy.to(dt)
    h_masked = -logprobs_masked.to(dt) if entropy_masked is None else entropy_masked.to(dt)
    h_mean = _token_mean(h, valid)
    h_masked_mean = _token_mean(h_masked, valid)
    loss = -gamma * perception_kl
    if entropy_coef > 0:  # with 0 the entropies are diagnostics only and route no gradient
        loss = loss + entropy_coef * (h_mean + h_masked_mean)

    n = max(int(valid.sum()), 1)
    diags = {
        "perception_kl": float(perception_kl.detach()),
        "perception_kl_clamped_frac": float((valid & (k3.detach() > kl_clamp)).sum()) / n,
        "entropy": float(h_mean.detach()),
        "entropy_masked": float(h_masked_mean.detach()),
    }
    return loss, diags


def vold_loss(
    grpo_loss_value: torch.Tensor,
    per_token_reverse_kl: torch.Tensor,
    mask: torch.Tensor,
    rewards: torch.Tensor,
    beta: float = 1.0,
    distill_on: str = "all",
    success_threshold: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """VOLD objective (arXiv 2510.23497): GRPO loss + beta * on-policy distillation term.

    The distillation term is the per-token reverse KL to the (text-only) teacher averaged like
    standard OPD (per-rollout token mean, then mean over the rollouts it applies to), over all
    rollouts (`distill_on="all"`) or only the failed ones, `reward < success_threshold`
    (`"failed"`, the (1 - r) weighting one public summary reports). With no failed rollout the
    term is 0. beta's published value is unknown; 1.0 is this library's default.

    Args:
        grpo_loss_value: scalar GRPO/DAPO loss (e.g. from `policy_loss`).
        per_token_reverse_kl: `[B, T]` reverse KL(student || teacher) per token.
        mask: `[B, T]` 1 for completion tokens.
        rewards: `[B]` reward of each rollout (float, integer or bool).
        beta: distillation weight, >= 0.
        distill_on: "all" or "failed".
        success_threshold: rollouts with reward below it count as failed.

    Returns:
        (scalar loss, diagnostics): `grpo_loss`, `distill_kl` (the averaged KL term before beta),
        `n_distilled` (rollouts in the term), `frac_failed`.
    """
    fn = "vold_loss"
    check_choice(fn, "distill_on", distill_on, VOLD_DISTILL_ON)
    check_float(fn, "grpo_loss_value", grpo_loss_value)
    if grpo_loss_value.dim() != 0:
        raise ValueError(f"{fn}: grpo_loss_value must be a scalar, got shape {tuple(grpo_loss_value.shape)}")
    check_float(fn, "per_token_reverse_kl", per_token_reverse_kl)
    check_ndim(fn, "per_token_reverse_kl", per_token_reverse_kl, 2, "[B, T]")
    valid = as_valid(fn, mask, per_token_reverse_kl, "per_token_reverse_kl")
    check_real(fn, "rewards", rewards)
    if tuple(rewards.shape) != tuple(per_token_reverse_kl.shape[:1]):
        raise ValueError(
            f"{fn}: rewards has shape {tuple(rewards.shape)} but per_token_reverse_kl has shape "
            f"{tuple(per_token_reverse_kl.shape)}; expected rewards [B]"
        )
    check_nonnegative(fn, "beta", beta)
    dt = compute_dtype(per_token_reverse_kl, grpo_loss_value)
    kl = per_token_reverse_kl.to(dt)
    failed = rewards.detach() < success_threshold  # [B]
    selected = failed if distill_on == "failed" else torch.ones_like(failed)
    per_rollout = _zeroed(kl, valid).sum(-1) / valid.sum(-1).clamp_min(1).to(dt)
    n_sel = int(selected.sum())
    distill = _zeroed(per_rollout, selected).sum() / max(n_sel, 1)
    loss = grpo_loss_value.to(dt) + beta * distill
    diags = {
        "grpo_loss": float(grpo_loss_value.detach()),
        "distill_kl": float(distill.detach()),
        "n_distilled": float(n_sel),
        "frac_failed": float(failed.sum()) / max(failed.numel(), 1),
    }
    return loss, diags
