"""Visual advantage (VA) and the VA-OPD objective (VA-OPD paper, Eq. 1-6).

Shapes: `P` prompts, `K` rollouts per prompt, `T` completion positions (padded), `B = P * K`.
`mask` is 1 (or True) for completion tokens that count and 0 for padding; values at masked
positions are ignored, even if they are NaN or inf.

Edge rules, shared by every function here:
- a rollout with no valid token has mean VA 0 and loss 0, and still counts in averages over
  rollouts (as in Eq. 1's average);
- VA ranks break ties by position: among equal VA the earlier token ranks first (the paper does
  not say; `va_token_mask` breaks ties at random instead, see there);
- counts such as ceil(top_frac * T) are computed with a 1e-9 guard so that float round-off
  (0.07 * 100 = 7.000000000000001) does not add a token.
"""

from __future__ import annotations

import math

import torch

from vlm_opd.algorithms._checks import (
    as_valid,
    check_choice,
    check_closed_unit,
    check_finite_where,
    check_float,
    check_ndim,
    check_nonnegative,
    check_open_unit,
    check_positive,
    check_same_shape,
    compute_dtype,
)

# Guard against float round-off in frac * count before ceil/floor (see module docstring).
_COUNT_GUARD = 1e-9
VA_MASK_CHOICES = ("top", "bottom", "random")
HIGH_GROUP_CHOICES = ("fixed", "positive")
# Divergences teacher_shift_va accepts (the chunked ones; see its docstring for the direction).
SHIFT_DIVERGENCES = ("kl_real_degraded", "kl_degraded_real", "jsd")


def visual_advantage(
    teacher_logprobs_real: torch.Tensor,
    teacher_logprobs_degraded: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Per-token visual advantage, paper Eq. 2: `a_t = max(lp_real - lp_degraded, 0) * mask`.

    Args:
        teacher_logprobs_real: `[B, T]` teacher log-prob of each sampled token given the real image.
        teacher_logprobs_degraded: `[B, T]` the same under the degraded image.
        mask: `[B, T]` 1 for completion tokens.

    Returns:
        `[B, T]` float32 (float64 for float64 inputs), detached, 0 at masked positions.
    """
    fn = "visual_advantage"
    check_float(fn, "teacher_logprobs_real", teacher_logprobs_real)
    check_float(fn, "teacher_logprobs_degraded", teacher_logprobs_degraded)
    check_same_shape(
        fn,
        "teacher_logprobs_real",
        teacher_logprobs_real,
        "teacher_logprobs_degraded",
        teacher_logprobs_degraded,
    )
    valid = as_valid(fn, mask, teacher_logprobs_real, "teacher_logprobs_real")
    dt = compute_dtype(teacher_logprobs_real, teacher_logprobs_degraded)
    diff = (teacher_logprobs_real.detach().to(dt) - teacher_logprobs_degraded.detach().to(dt)).clamp_min(0)
    return torch.where(valid, diff, torch.zeros_like(diff))


def teacher_shift_va(
    hidden_real: torch.Tensor,
    hidden_degraded: torch.Tensor,
    lm_head_weight: torch.Tensor,
    mask: torch.Tensor,
    divergence: str = "kl_real_degraded",
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Position-level visual advantage: how much the teacher's next-token distribution moves when
    the image is degraded, `a_t = D(p_T(. | v, y_<t), p_T(. | v~, y_<t)) * mask`.

    Unlike Eq. 2 (`visual_advantage`) it does not look at the sampled token, so a position where the
    student wrote a wrong digit keeps the high score of a digit that must be read off the image. Not
    the paper's definition (an option, `va_opd.va_kind: teacher_shift`). Divergences:
    "kl_real_degraded" KL(p_real || p_degraded) (the default: large where the real-image teacher is
    sure and the blind one is not, bounded by about -log p_degraded of what the teacher reads),
    "kl_degraded_real" KL(p_degraded || p_real) (dominated by the real-image teacher's tiny tail
    probabilities), "jsd" the Jensen-Shannon divergence (<= ln 2, saturates on every read token).
    Divergences are >= 0, so nothing is clipped. Computed `chunk_size` valid rows at a time from the
    final hidden states and the lm_head weight (`chunked_divergence`, no gradient), never `[N, V]`.

    Args:
        hidden_real: `[B, T, H]` teacher final hidden states at the positions predicting each
            completion token, real image.
        hidden_degraded: `[B, T, H]` the same with the degraded image.
        lm_head_weight: `[V, H]` the teacher's output projection (no bias).
        mask: `[B, T]` 1 for completion tokens.
        divergence: one of SHIFT_DIVERGENCES.
        chunk_size: rows per `[chunk, V]` logits block.

    Returns:
        `[B, T]` float32 (float64 for float64 inputs), 0 at masked positions, no gradient.
    """
    from vlm_opd.algorithms.chunked import chunked_divergence

    fn = "teacher_shift_va"
    check_choice(fn, "divergence", divergence, SHIFT_DIVERGENCES)
    check_float(fn, "hidden_real", hidden_real)
    check_float(fn, "hidden_degraded", hidden_degraded)
    check_same_shape(fn, "hidden_real", hidden_real, "hidden_degraded", hidden_degraded)
    check_ndim(fn, "hidden_real", hidden_real, 3, "[B, T, H]")
    valid = as_valid(fn, mask, hidden_real[..., 0], "hidden_real[..., 0]")
    dt = compute_dtype(hidden_real, hidden_degraded, lm_head_weight)
    out = torch.zeros(valid.shape, dtype=dt, device=hidden_real.device)
    if not bool(valid.any()):
        return out
    # chunked_divergence(student=a, teacher=b) with kind reverse_kl is KL(p_a || p_b).
    a, b, kind = hidden_real, hidden_degraded, "reverse_kl"
    if divergence == "kl_degraded_real":
        a, b = hidden_degraded, hidden_real
    elif divergence == "jsd":
        kind = "jsd"
    with torch.no_grad():
        w = lm_head_weight.detach()
        values = chunked_divergence(a.detach()[valid], w, b.detach()[valid], w, kind=kind, beta=0.5,
                                    chunk_size=chunk_size)
    out[valid] = values.to(dt).clamp_min(0)  # float round-off can give -1e-7 for identical rows
    return out


def floor_va(va: torch.Tensor, floor: float) -> torch.Tensor:
    """VA with every value <= `floor` set to 0 (`va_opd.va_floor`; not the paper's, which is floor 0).

    Measured on the demo teacher, 68% of the scaffold tokens get a tiny positive sampled-token VA
    (99th percentile 0.0015 nats) from the teacher's wording shifting slightly with the image, and
    every position gets a positive teacher_shift VA; a floor such as 0.01 turns those into exact zeros
    so that `high_group: positive` and the rollout weights see only tokens that need the image.
    `floor == 0` returns `va` unchanged (VA is >= 0). Shape-preserving, detached.
    """
    fn = "floor_va"
    check_float(fn, "va", va)
    check_nonnegative(fn, "floor", floor)
    va = va.detach()
    if floor == 0:
        return va
    return torch.where(va > floor, va, torch.zeros_like(va))


def rollout_weights(mean_va: torch.Tensor, tau: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """Rollout-level weights, paper Eq. 3-4: softmax over the K siblings of z-scored mean VA.

    `z_k = (a_k - mean) / (std + eps)` with the group mean and the unbiased std (`torch.std`'s
    default), then `w = softmax(z / tau)`. K == 1 gives weight 1 (the unbiased std of one value
    is undefined); equal means give uniform weights. Detached.

    Args:
        mean_va: `[P, K]` trajectory-mean VA of each rollout.
        tau: softmax temperature, > 0.
        eps: added to the std, >= 0.

    Returns:
        `[P, K]` float32 (float64 for float64 input); each row sums to 1.
    """
    fn = "rollout_weights"
    check_float(fn, "mean_va", mean_va)
    check_ndim(fn, "mean_va", mean_va, 2, "[P, K]")
    check_positive(fn, "tau", tau)
    check_nonnegative(fn, "eps", eps)
    x = mean_va.detach().to(compute_dtype(mean_va))
    if x.shape[-1] == 1:
        return torch.ones_like(x)
    centred = x - x.mean(-1, keepdim=True)
    denom = x.std(-1, keepdim=True) + eps
    # eps == 0 with equal means would be 0/0; those rows are uniform by definition.
    z = torch.where(denom > 0, centred / denom.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))
    return torch.softmax(z / tau, dim=-1)


def _rank_among_valid(key: torch.Tensor, valid: torch.Tensor, descending: bool) -> torch.Tensor:
    """Rank `[..., T]` of each position among the valid ones of its row (0 = first).

    Sorted by `key` (descending or ascending), ties broken by position; invalid positions get
    ranks after every valid one. Two stable sorts: by key, then valid-first, which keeps the key
    order among valid tokens whatever garbage sits at invalid positions.
    """
    order = torch.sort(key, dim=-1, descending=descending, stable=True).indices
    valid_in_order = valid.gather(-1, order).to(torch.uint8)
    order = order.gather(-1, torch.sort(valid_in_order, dim=-1, descending=True, stable=True).indices)
    positions = torch.arange(key.shape[-1], device=key.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def _high_va_group(va: torch.Tensor, valid: torch.Tensor, top_frac: float, high_group: str = "fixed") -> torch.Tensor:
    """Bool `[..., T]`: the high-VA group of each row.

    "fixed" (paper Section 3.2): the ceil(top_frac * n) highest-VA valid tokens, at least 1 and,
    when n >= 2, at most n - 1 (so both groups are non-empty); a lone token is in the high group.
    When fewer tokens than that have VA > 0, the group is filled up with VA = 0 tokens (earliest
    first). "positive": the same ranking and cap, but only tokens with VA > 0 (may be empty).
    """
    n_valid = valid.sum(-1)
    n_high = torch.ceil(n_valid.to(torch.float64) * top_frac - _COUNT_GUARD).long().clamp_min(1)
    n_high = torch.where(n_valid >= 2, torch.minimum(n_high, n_valid - 1), n_valid)
    rank = _rank_among_valid(va, valid, descending=True)
    high = valid & (rank < n_high.unsqueeze(-1))
    if high_group == "positive":
        high = high & (va > 0)
    return high


def _masked_mean(values: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over `select` along the last dim; 0 where nothing is selected."""
    total = torch.where(select, values, torch.zeros_like(values)).sum(-1)
    return total / select.sum(-1).clamp_min(1).to(values.dtype)


def _grouped_loss(
    loss: torch.Tensor,
    high: torch.Tensor,
    valid: torch.Tensor,
    keep: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """Eq. 5 per rollout given the high-VA group; `keep` (subset of valid) drops tokens from the
    group means after the groups are fixed (a group emptied this way contributes 0). A group that
    is empty before `keep` (only with high_group="positive": no token has VA > 0) gives its weight
    to the other group, so such a rollout's loss is its plain token mean."""
    low = valid & ~high
    lam_t = torch.full(loss.shape[:-1], lam, dtype=loss.dtype, device=loss.device)
    lam_t = torch.where(high.any(-1), lam_t, torch.zeros_like(lam_t))
    lam_t = torch.where(low.any(-1), lam_t, torch.ones_like(lam_t))
    grouped = lam_t * _masked_mean(loss, high & keep) + (1.0 - lam_t) * _masked_mean(loss, low & keep)
    lone = _masked_mean(loss, keep)  # T == 1: the token's own loss, not lam times it
    return torch.where(valid.sum(-1) == 1, lone, grouped)


def grouped_token_loss(
    per_token_loss: torch.Tensor,
    va: torch.Tensor,
    mask: torch.Tensor,
    top_frac: float = 0.2,
    lam: float = 0.5,
    token_keep: torch.Tensor | None = None,
    high_group: str = "fixed",
) -> torch.Tensor:
    """Token-level grouped loss, paper Eq. 5: `lam * mean(high) + (1 - lam) * mean(low)`.

    Among a rollout's n valid tokens the high-VA group is the ceil(top_frac * n) tokens of
    largest VA (at least 1, at most n - 1 when n >= 2; ties go to the earlier position); the
    rest form the low group. n == 1 gives that token's loss, n == 0 gives 0. Vectorised: a
    stable sort per row, no Python loop over rollouts. `high_group="positive"` (not the paper's)
    keeps only tokens with VA > 0 in the high group; an empty group gives its weight to the other.

    Args:
        per_token_loss: `[B, T]` (any leading dims `[..., T]`), e.g. per-token reverse KL.
        va: `[B, T]` visual advantage (detached here).
        mask: `[B, T]` 1 for completion tokens.
        top_frac: high-group fraction p_v in (0, 1).
        lam: weight of the high group in [0, 1].
        token_keep: optional `[B, T]` 0/1; tokens with 0 are removed from the group means after
            the groups are decided (mask ablation).
        high_group: "fixed" (paper) or "positive" (see `_high_va_group`).

    Returns:
        `[B]` float32 (float64 for float64 inputs).
    """
    fn = "grouped_token_loss"
    check_float(fn, "per_token_loss", per_token_loss)
    check_float(fn, "va", va)
    check_same_shape(fn, "per_token_loss", per_token_loss, "va", va)
    valid = as_valid(fn, mask, per_token_loss, "per_token_loss")
    check_open_unit(fn, "top_frac", top_frac)
    check_closed_unit(fn, "lam", lam)
    check_choice(fn, "high_group", high_group, HIGH_GROUP_CHOICES)
    if per_token_loss.dim() == 0:
        raise ValueError(f"{fn}: per_token_loss needs a token dimension, got a 0-D tensor")
    keep = valid if token_keep is None else valid & as_valid(fn, token_keep, per_token_loss, "per_token_loss")
    va_d = va.detach()
    check_finite_where(fn, "va", va_d, valid)
    loss = per_token_loss.to(compute_dtype(per_token_loss, va))
    return _grouped_loss(loss, _high_va_group(va_d, valid, top_frac, high_group), valid, keep, lam)


def opd_loss(per_token_kl: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Standard OPD, paper Eq. 1: per-rollout token mean of the KL, then mean over rollouts.

    Args:
        per_token_kl: `[B, T]` (any leading dims `[..., T]`).
        mask: same shape, 1 for completion tokens.

    Returns:
        (scalar loss, diagnostics): `kl_mean` (token mean over all valid tokens) and `n_tokens`.
    """
    fn = "opd_loss"
    check_float(fn, "per_token_kl", per_token_kl)
    if per_token_kl.dim() == 0:
        raise ValueError(f"{fn}: per_token_kl needs a token dimension, got a 0-D tensor")
    valid = as_valid(fn, mask, per_token_kl, "per_token_kl")
    kl = per_token_kl.to(compute_dtype(per_token_kl))
    per_rollout = _masked_mean(kl, valid).reshape(-1)
    loss = per_rollout.sum() / max(per_rollout.numel(), 1)
    n_tokens = int(valid.sum())
    kl_sum = torch.where(valid, kl.detach(), torch.zeros_like(kl)).sum()
    return loss, {"kl_mean": float(kl_sum) / max(n_tokens, 1), "n_tokens": float(n_tokens)}


def va_opd_loss(
    per_token_kl: torch.Tensor,
    va: torch.Tensor,
    mask: torch.Tensor,
    tau: float = 1.0,
    top_frac: float = 0.2,
    lam: float = 0.5,
    reweight: bool = True,
    grouped: bool = True,
    token_keep: torch.Tensor | None = None,
    high_group: str = "fixed",
) -> tuple[torch.Tensor, dict[str, float]]:
    """VA-OPD objective, paper Eq. 6: mean over prompts of `sum_k w_k * L_k`.

    `w_k` are `rollout_weights` of the rollouts' mean VA (Eq. 3-4), or 1/K when
    `reweight=False`; `L_k` is `grouped_token_loss` (Eq. 5), or the rollout's token mean when
    `grouped=False`. With both off this is exactly `opd_loss` (Eq. 1). Weights, groups and VA
    carry no gradient; gradients flow to `per_token_kl` only.

    Args:
        per_token_kl: `[P, K, T]` per-token reverse KL (or any per-token loss).
        va: `[P, K, T]` visual advantage.
        mask: `[P, K, T]` 1 for completion tokens.
        tau: rollout-weight softmax temperature, > 0.
        top_frac: high-VA fraction in (0, 1).
        lam: high-group weight in [0, 1].
        reweight: use VA rollout weights (else uniform 1/K).
        grouped: use the grouped token loss (else the rollout token mean).
        token_keep: optional `[P, K, T]` 0/1; removes tokens from the loss after VA grouping and
            rollout weights are decided (paper Section 2.2 mask ablation).
        high_group: "fixed" (the paper: the top ceil(top_frac * n), filled up with VA = 0 tokens
            when fewer are positive) or "positive" (only VA > 0 tokens; an empty group's weight
            goes to the other group).

    Returns:
        (scalar loss, diagnostics) with python floats:
        `mean_va` mean VA over all valid tokens; `top10_va_share` share of the batch's total VA
        carried by its top 10% valid tokens (0 if no VA); `weight_entropy` and `weight_max` the
        mean over prompts of the entropy and of the largest of the rollout weights; `kl_high`,
        `kl_low`, `kl_mean` token means of the KL over the high group, the low group and all
        valid tokens (groups as defined by top_frac, whether or not `grouped`, ignoring
        token_keep); `frac_va_positive` fraction of valid tokens with VA > 0; `frac_high` fraction
        of valid tokens in the high group; `frac_high_va_zero` fraction of the high group's tokens
        with VA = 0 (padding the paper's fixed-size group; always 0 with "positive").
    """
    fn = "va_opd_loss"
    check_float(fn, "per_token_kl", per_token_kl)
    check_ndim(fn, "per_token_kl", per_token_kl, 3, "[P, K, T]")
    check_float(fn, "va", va)
    check_same_shape(fn, "per_token_kl", per_token_kl, "va", va)
    valid = as_valid(fn, mask, per_token_kl, "per_token_kl")
    check_positive(fn, "tau", tau)
    check_open_unit(fn, "top_frac", top_frac)
    check_closed_unit(fn, "lam", lam)
    check_choice(fn, "high_group", high_group, HIGH_GROUP_CHOICES)
    keep = valid if token_keep is None else valid & as_valid(fn, token_keep, per_token_kl, "per_token_kl")

    dt = compute_dtype(per_token_kl, va)
    kl = per_token_kl.to(dt)
    va_d = va.detach().to(dt)
    check_finite_where(fn, "va", va_d, valid)
    va_d = torch.where(valid, va_d, torch.zeros_like(va_d))
    num_prompts, k = kl.shape[0], kl.shape[1]

    mean_va = _masked_mean(va_d, valid)  # [P, K]
    if reweight:
        weights = rollout_weights(mean_va, tau=tau)
    else:
        weights = torch.full_like(mean_va, 1.0 / max(k, 1))
    high = _high_va_group(va_d, valid, top_frac, high_group)
    if grouped:
        per_rollout = _grouped_loss(kl, high, valid, keep, lam)  # [P, K]
    else:
        per_rollout = _masked_mean(kl, keep)
    loss = (weights * per_rollout).sum(-1).sum() / max(num_prompts, 1)

    with torch.no_grad():
        kl_d = torch.where(valid, kl.detach(), torch.zeros_like(kl))
        n_valid = int(valid.sum())
        va_values = va_d[valid]
        va_total = float(va_values.sum())
        if n_valid > 0 and va_total > 0:
            n_top = math.ceil(0.1 * n_valid - _COUNT_GUARD)
            top_share = float(torch.topk(va_values, n_top).values.sum()) / va_total
        else:
            top_share = 0.0
        if weights.numel() > 0:
            w_log_w = torch.where(weights > 0, weights * weights.log(), torch.zeros_like(weights))
            weight_entropy = float(-w_log_w.sum(-1).mean())
            weight_max = float(weights.max(-1).values.mean())
        else:
            weight_entropy, weight_max = 0.0, 0.0
        low = valid & ~high
        diags = {
            "mean_va": va_total / max(n_valid, 1),
            "top10_va_share": top_share,
            "weight_entropy": weight_entropy,
            "weight_max": weight_max,
            "kl_high": float(kl_d[high].sum()) / max(int(high.sum()), 1),
            "kl_low": float(kl_d[low].sum()) / max(int(low.sum()), 1),
            "kl_mean": float(kl_d.sum()) / max(n_valid, 1),
            "frac_va_positive": float((va_values > 0).sum()) / max(n_valid, 1),
            "frac_high": float(high.sum()) / max(n_valid, 1),
            "frac_high_va_zero": float((high & (va_d <= 0)).sum()) / max(int(high.sum()), 1),
        }
    return loss, diags


def va_token_mask(
    va: torch.Tensor,
    mask: torch.Tensor,
    which: str = "top",
    frac: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Keep-mask for the paper's Section 2.2 mask ablation: drop `frac` of each rollout's tokens.

    Of a rollout's n valid tokens, round(frac * n) are dropped (halves round up), but at least
    1 and at most n - 1 when n >= 2, and none when n <= 1 (a rollout never loses all its
    tokens). Which ones: "top" the highest VA, "bottom" the lowest VA, "random" a uniform random
    subset. Ties among equal VA are broken at random with `generator` (most tokens have VA = 0
    exactly, so "bottom" would otherwise drop the earliest scaffold tokens: a choice by position,
    not "the lowest-VA 10%"); the paper (Section 2.2) does not say how it broke ties.

    Args:
        va: `[B, T]` visual advantage.
        mask: `[B, T]` 1 for completion tokens.
        which: "top", "bottom" or "random".
        frac: fraction to drop, in (0, 1).
        generator: torch.Generator for the random draws (on any device; the draws are made on the
            generator's device and moved to va's, so a CPU generator works for CUDA tensors and the
            same seed gives the same mask on every device); None uses the global CPU RNG.

    Returns:
        `[B, T]` keep-mask in mask's dtype: 1 for valid tokens that stay, 0 elsewhere.
    """
    fn = "va_token_mask"
    check_choice(fn, "which", which, VA_MASK_CHOICES)
    check_float(fn, "va", va)
    valid = as_valid(fn, mask, va, "va")
    check_open_unit(fn, "frac", frac)
    if va.dim() == 0:
        raise ValueError(f"{fn}: va needs a token dimension, got a 0-D tensor")
    n_valid = valid.sum(-1)
    n_drop = torch.floor(n_valid.to(torch.float64) * frac + 0.5 + _COUNT_GUARD).long()
    n_drop = torch.where(n_valid >= 2, n_drop.clamp(min=1).minimum(n_valid - 1), torch.zeros_like(n_valid))
    draw_device = generator.device if generator is not None else torch.device("cpu")
    key = torch.rand(va.shape, generator=generator, device=draw_device).to(va.device)
    if which == "random":
        rank = _rank_among_valid(key, valid, descending=False)
    else:
        va_d = va.detach()
        check_finite_where(fn, "va", va_d, valid)
        # Random tie-break: visit positions in a random order, then sort stably by VA.
        perm = torch.argsort(key, dim=-1)
        rank_perm = _rank_among_valid(va_d.gather(-1, perm), valid.gather(-1, perm), descending=(which == "top"))
        rank = torch.empty_like(rank_perm).scatter_(-1, perm, rank_perm)
    keep = valid & ~(rank < n_drop.unsqueeze(-1))
    return keep.to(mask.dtype)
