"""Full-vocabulary divergences and token log-probs from hidden states, in row chunks.

A `[N, V]` float tensor for N = 2048 tokens and a 152k vocabulary is 1.2 GB, and autograd through
the plain functions keeps several of them. Here the logits of `chunk_size` rows at a time are
computed from the final hidden states and the lm_head weight, reduced to per-row values, and
dropped. Peak extra memory is a few `[chunk_size, V]` buffers (reused across chunks) plus the
`[V, H]` weight gradient; it does not grow with N.

Backward is also chunked. Each output row depends on one hidden row only, so:
- if only the hidden states need a gradient (e.g. a frozen or LoRA-wrapped lm_head), the forward
  also computes each row's gradient for a unit upstream gradient, `[N, H]`, and backward just
  scales it: no recomputation;
- if the weight (or bias) needs a gradient, its gradient `sum_i go_i * g_i h_i^T` depends on the
  upstream gradients `go`, unknown during forward, so backward recomputes each chunk's logits
  (two extra matmuls per chunk for a divergence, one for log-probs).

Math runs in float32 (float64 for float64 inputs). bf16/fp16 weights are upcast once per pass
(a `[V, H]` float32 copy, independent of N). Logits are `(hidden @ weight.T + bias) / temperature`.
Logits of -inf (e.g. a -inf bias) are not supported here; use the plain functions for those.
"""

from __future__ import annotations

import functools
import math
from contextlib import nullcontext

import torch
from torch.autograd.function import once_differentiable

from vlm_opd.algorithms._checks import (
    check_choice,
    check_closed_unit,
    check_float,
    check_positive,
    compute_dtype,
)

DIVERGENCE_KINDS = ("reverse_kl", "forward_kl", "jsd")


# ----------------------------------------------------------------------------------- helpers


def _no_autocast(fn):
    """Run `fn` with autocast off on the device of its first argument: the math here is float32 by
    design (a bf16 softmax over 152k logits loses the small probabilities the KL sums), and the
    trainer calls it inside `accelerator.autocast()`."""

    @functools.wraps(fn)
    def wrapper(first, *args, **kwargs):
        kind = first.device.type
        ctx = torch.autocast(kind, enabled=False) if torch.amp.is_autocast_available(kind) else nullcontext()
        with ctx:
            return fn(first, *args, **kwargs)

    return wrapper


def _logits_into(
    out: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, inv_t: float
) -> torch.Tensor:
    """out[C, V] = (hidden @ weight.T + bias) * inv_t, written into a reused buffer."""
    if bias is None:
        torch.mm(hidden if inv_t == 1.0 else hidden * inv_t, weight.t(), out=out)
    else:
        torch.addmm(bias, hidden, weight.t(), beta=inv_t, alpha=inv_t, out=out)
    return out


def _buffers(count: int, rows: int, cols: int, like: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
    return [torch.empty(rows, cols, dtype=dtype, device=like.device) for _ in range(count)]


def _canonical_kind(kind: str, beta: float) -> str:
    """TRL convention: the generalized JSD is the forward KL at beta 0, the reverse KL at 1."""
    if kind == "jsd" and beta == 0.0:
        return "forward_kl"
    if kind == "jsd" and beta == 1.0:
        return "reverse_kl"
    return kind


def _divergence_chunk(
    zs: torch.Tensor, zt: torch.Tensor, e: torch.Tensor, kind: str, beta: float, want_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row divergence of one chunk of scaled logits, and optionally its gradient.

    zs, zt: `[C, V]` student / teacher logits (already divided by the temperature); e: `[C, V]`
    scratch. All three are overwritten. Returns values `[C]` and, if `want_grad`, the gradient of
    each row's value w.r.t. that row's scaled student logits, `[C, V]` (aliasing a buffer).

    Expectations over V are formed as an in-place product followed by `sum`, whose pairwise
    reduction keeps float32 error near 1e-6 relative; a BLAS row-dot (bmm) over 152k terms was
    measured 100x worse.
    """
    zs.sub_(zs.amax(1, keepdim=True))
    zt.sub_(zt.amax(1, keepdim=True))
    if kind == "reverse_kl":
        # KL(p_s||p_t) = E_ps[zs - zt] - log Zs + log Zt, with zs, zt max-shifted.
        torch.exp(zt, out=e)
        log_zt = e.sum(1).log()
        torch.exp(zs, out=e)
        sum_s = e.sum(1)
        log_zs = sum_s.log()
        prod = zt.neg_().add_(zs).mul_(e)  # exp(zs) * (zs - zt)
        values = prod.sum(1) / sum_s - log_zs + log_zt
        if not want_grad:
            return values, None
        # d KL / d s = p_s * (log p_s - log p_t - KL) = (prod + exp(zs) * (log Zt - log Zs - KL)) / Zs
        e.mul_((log_zt - log_zs - values).unsqueeze(1))
        return values, prod.add_(e).div_(sum_s.unsqueeze(1))
    if kind == "forward_kl":
        # KL(p_t||p_s) = E_pt[zt - zs] - log Zt + log Zs
        torch.exp(zs, out=e)
        sum_s = e.sum(1)
        torch.exp(zt, out=e)
        sum_t = e.sum(1)
        values = zt.sub_(zs).mul_(e).sum(1) / sum_t - sum_t.log() + sum_s.log()
        if not want_grad:
            return values, None
        # d KL / d s = p_s - p_t
        p_t = e.div_(sum_t.unsqueeze(1))
        return values, zs.exp_().div_(sum_s.unsqueeze(1)).sub_(p_t)
    # Generalized JSD, 0 < beta < 1: beta KL(p_t||m) + (1-beta) KL(p_s||m), m = beta p_t + (1-beta) p_s.
    # Less tuned than the KLs: a few [C, V] temporaries besides the buffers.
    torch.exp(zs, out=e)
    logp_s = zs.sub_(e.sum(1).log().unsqueeze(1))
    torch.exp(zt, out=e)
    logp_t = zt.sub_(e.sum(1).log().unsqueeze(1))
    log_m = torch.logaddexp(logp_s + math.log1p(-beta), logp_t + math.log(beta))
    p_t = e.div_(e.sum(1, keepdim=True))
    kl_tm = logp_t.sub_(log_m).mul_(p_t).sum(1)
    p_s = torch.exp(logp_s, out=e)
    s_minus_m = logp_s.sub_(log_m)  # log p_s - log m
    kl_sm = torch.mul(p_s, s_minus_m, out=log_m).sum(1)
    values = beta * kl_tm + (1.0 - beta) * kl_sm
    if not want_grad:
        return values, None
    # d JSD / d s = (1 - beta) * p_s * (log p_s - log m - KL(p_s||m))
    s_minus_m.sub_(kl_sm.unsqueeze(1))
    return values, p_s.mul_(s_minus_m).mul_(1.0 - beta)


def _logprob_chunk(
    z: torch.Tensor, e: torch.Tensor, ids: torch.Tensor, want_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Log-prob of `ids` `[C]` and entropy of one chunk of scaled logits `z` `[C, V]`.

    z is max-shifted in place and, when `want_entropy`, then overwritten with exp(z) * z; e
    receives exp(z) (unnormalised). Returns (logprobs, entropy or None, row sums of e, their log).
    """
    z.sub_(z.amax(1, keepdim=True))
    torch.exp(z, out=e)
    sums = e.sum(1)
    log_sums = sums.log()
    logprobs = z.gather(1, ids.unsqueeze(1)).squeeze(1) - log_sums
    entropy = None
    if want_entropy:
        entropy = log_sums - z.mul_(e).sum(1) / sums  # H = log Z - E_p[z]
    return logprobs, entropy, sums, log_sums


def _check_lm_pair(fn: str, hidden_name: str, hidden: torch.Tensor, weight_name: str, weight: torch.Tensor) -> None:
    check_float(fn, hidden_name, hidden)
    check_float(fn, weight_name, weight)
    if hidden.dim() != 2:
        raise ValueError(f"{fn}: {hidden_name} must be [N, H] (2-D), got shape {tuple(hidden.shape)}")
    if weight.dim() != 2:
        raise ValueError(f"{fn}: {weight_name} must be [V, H] (2-D), got shape {tuple(weight.shape)}")
    if hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{fn}: {hidden_name} has shape {tuple(hidden.shape)} but {weight_name} has shape "
            f"{tuple(weight.shape)}; their hidden sizes (last dims) must match"
        )


def _check_bias(fn: str, name: str, bias: torch.Tensor | None, weight_name: str, weight: torch.Tensor) -> None:
    if bias is None:
        return
    check_float(fn, name, bias)
    if tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"{fn}: {name} has shape {tuple(bias.shape)} but {weight_name} has shape "
            f"{tuple(weight.shape)}; expected {name} of shape ({weight.shape[0]},)"
        )


def _check_chunk_size(fn: str, chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"{fn}: chunk_size must be an int >= 1, got {chunk_size!r}")


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.detach().to(dtype)


# ---------------------------------------------------------------------------- divergences


@_no_autocast
def _divergence_forward(hs, ws, bs, ht, wt, bt, kind, beta, inv_t, chunk, unit_grad_hidden):
    """Values `[N]`; with `unit_grad_hidden`, also d value_i / d hidden_i for each row, `[N, Hs]`."""
    dt = compute_dtype(hs, ws, bs, ht, wt, bt)
    ws_c, bs_c, wt_c, bt_c = _cast(ws, dt), _cast(bs, dt), _cast(wt, dt), _cast(bt, dt)
    n, v = hs.shape[0], ws.shape[0]
    values = torch.empty(n, dtype=dt, device=hs.device)
    grad_h = torch.empty(n, hs.shape[1], dtype=dt, device=hs.device) if unit_grad_hidden else None
    zs_buf, zt_buf, e_buf = _buffers(3, min(chunk, n), v, hs, dt)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        c = stop - start
        zs = _logits_into(zs_buf[:c], hs[start:stop].detach().to(dt), ws_c, bs_c, inv_t)
        zt = _logits_into(zt_buf[:c], ht[start:stop].detach().to(dt), wt_c, bt_c, inv_t)
        vals, g = _divergence_chunk(zs, zt, e_buf[:c], kind, beta, want_grad=unit_grad_hidden)
        values[start:stop] = vals
        if grad_h is not None:
            torch.mm(g, ws_c, out=grad_h[start:stop])
    if grad_h is not None and inv_t != 1.0:
        grad_h.mul_(inv_t)
    return values, grad_h


@_no_autocast
def _divergence_backward(go, hs, ws, bs, ht, wt, bt, kind, beta, inv_t, chunk, needs):
    """Recompute each chunk and accumulate the gradients of `sum_i go_i * value_i`."""
    need_h, need_w, need_b = needs
    dt = compute_dtype(hs, ws, bs, ht, wt, bt)
    ws_c, bs_c, wt_c, bt_c = _cast(ws, dt), _cast(bs, dt), _cast(wt, dt), _cast(bt, dt)
    n, v = hs.shape[0], ws.shape[0]
    grad_h = torch.empty(n, hs.shape[1], dtype=dt, device=hs.device) if need_h else None
    grad_w = torch.zeros(v, ws.shape[1], dtype=dt, device=hs.device) if need_w else None
    grad_b = torch.zeros(v, dtype=dt, device=hs.device) if need_b else None
    scale = go.detach().to(dt) * inv_t  # d loss / d raw logits = go_i * inv_t * d value_i / d scaled logits
    zs_buf, zt_buf, e_buf = _buffers(3, min(chunk, n), v, hs, dt)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        c = stop - start
        h_c = hs[start:stop].detach().to(dt)
        zs = _logits_into(zs_buf[:c], h_c, ws_c, bs_c, inv_t)
        zt = _logits_into(zt_buf[:c], ht[start:stop].detach().to(dt), wt_c, bt_c, inv_t)
        _, g = _divergence_chunk(zs, zt, e_buf[:c], kind, beta, want_grad=True)
        g.mul_(scale[start:stop].unsqueeze(1))
        if grad_h is not None:
            torch.mm(g, ws_c, out=grad_h[start:stop])
        if grad_w is not None:
            grad_w.addmm_(g.t(), h_c)
        if grad_b is not None:
            grad_b.add_(g.sum(0))
    return grad_h, grad_w, grad_b


class _ChunkedDivergence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hs, ws, bs, ht, wt, bt, kind, beta, inv_t, chunk):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bs is not None and ctx.needs_input_grad[2]
        hidden_only = need_h and not need_w and not need_b
        values, unit_grad_h = _divergence_forward(hs, ws, bs, ht, wt, bt, kind, beta, inv_t, chunk, hidden_only)
        ctx.hidden_only = hidden_only
        ctx.hs_dtype = hs.dtype
        ctx.args = (kind, beta, inv_t, chunk)
        ctx.needs = (need_h, need_w, need_b)
        if hidden_only:
            ctx.save_for_backward(unit_grad_h)
        else:
            ctx.save_for_backward(hs, ws, bs, ht, wt, bt)
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx, go):
        if ctx.hidden_only:
            (unit_grad_h,) = ctx.saved_tensors
            grad_h = unit_grad_h * go.to(unit_grad_h.dtype).unsqueeze(1)
            return grad_h.to(ctx.hs_dtype), None, None, None, None, None, None, None, None, None
        hs, ws, bs, ht, wt, bt = ctx.saved_tensors
        grad_h, grad_w, grad_b = _divergence_backward(go, hs, ws, bs, ht, wt, bt, *ctx.args, ctx.needs)
        return (
            None if grad_h is None else grad_h.to(hs.dtype),
            None if grad_w is None else grad_w.to(ws.dtype),
            None if grad_b is None else grad_b.to(bs.dtype),
            None, None, None, None, None, None, None,
        )


def chunked_divergence(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    kind: str = "reverse_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token full-vocabulary divergence between student and teacher, without `[N, V]` tensors.

    Logits are `(hidden @ weight.T + bias) / temperature` for each side; `kind` is
    "reverse_kl" KL(p_s||p_t), "forward_kl" KL(p_t||p_s) or "jsd" (`generalized_jsd` with
    `beta`, TRL convention). Equal to the plain functions in `divergences` applied to the full
    logits. Differentiable w.r.t. student_hidden, student_weight and student_bias (memory-bounded
    custom backward, see module docstring); the teacher side never gets a gradient.

    Args:
        student_hidden: `[N, Hs]` final hidden states at the N scored positions.
        student_weight: `[V, Hs]` student lm_head weight.
        teacher_hidden: `[N, Ht]`.
        teacher_weight: `[V, Ht]`; V must equal the student's.
        kind: "reverse_kl", "forward_kl" or "jsd".
        beta: JSD interpolation in [0, 1] (used by "jsd" only).
        temperature: > 0.
        chunk_size: rows per chunk; peak extra memory is about 3 * chunk_size * V floats
            (about 6 for "jsd", whose log-mixture needs temporaries).
        student_bias, teacher_bias: optional `[V]` lm_head biases.

    Returns:
        `[N]` float32 (float64 if any input is float64).
    """
    fn = "chunked_divergence"
    check_choice(fn, "kind", kind, DIVERGENCE_KINDS)
    _check_lm_pair(fn, "student_hidden", student_hidden, "student_weight", student_weight)
    _check_lm_pair(fn, "teacher_hidden", teacher_hidden, "teacher_weight", teacher_weight)
    if student_weight.shape[0] != teacher_weight.shape[0]:
        raise ValueError(
            f"{fn}: vocabulary sizes differ: student_weight has shape {tuple(student_weight.shape)} "
            f"but teacher_weight has shape {tuple(teacher_weight.shape)}"
        )
    if student_hidden.shape[0] != teacher_hidden.shape[0]:
        raise ValueError(
            f"{fn}: student_hidden has shape {tuple(student_hidden.shape)} but teacher_hidden has "
            f"shape {tuple(teacher_hidden.shape)}; they must have the same number of rows N"
        )
    _check_bias(fn, "student_bias", student_bias, "student_weight", student_weight)
    _check_bias(fn, "teacher_bias", teacher_bias, "teacher_weight", teacher_weight)
    check_closed_unit(fn, "beta", beta)
    check_positive(fn, "temperature", temperature)
    _check_chunk_size(fn, chunk_size)

    kind = _canonical_kind(kind, beta)
    inv_t = 1.0 / temperature
    args = (student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (student_hidden, student_weight, student_bias)
    )
    if not needs_grad:
        with torch.no_grad():
            return _divergence_forward(*args, kind, beta, inv_t, chunk_size, False)[0]
    return _ChunkedDivergence.apply(*args, kind, beta, inv_t, chunk_size)


# ------------------------------------------------------------------------------- log-probs


@_no_autocast
def _logprob_forward(h, w, b, ids, inv_t, chunk, want_entropy, unit_grad_hidden):
    """Log-probs `[N]`, entropies `[N]` or None, and with `unit_grad_hidden` the per-row gradients
    of the log-prob and of the entropy w.r.t. the hidden row (`[N, H]` each, entropy's or None)."""
    dt = compute_dtype(h, w, b)
    w_c, b_c = _cast(w, dt), _cast(b, dt)
    n, v = h.shape[0], w.shape[0]
    logprobs = torch.empty(n, dtype=dt, device=h.device)
    entropy = torch.empty(n, dtype=dt, device=h.device) if want_entropy else None
    g_lp = torch.empty(n, h.shape[1], dtype=dt, device=h.device) if unit_grad_hidden else None
    g_ent = torch.empty(n, h.shape[1], dtype=dt, device=h.device) if unit_grad_hidden and want_entropy else None
    z_buf, e_buf = _buffers(2, min(chunk, n), v, h, dt)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        c = stop - start
        z = _logits_into(z_buf[:c], h[start:stop].detach().to(dt), w_c, b_c, inv_t)
        lp, ent, sums, log_sums = _logprob_chunk(z, e_buf[:c], ids[start:stop], want_entropy)
        logprobs[start:stop] = lp
        if entropy is not None:
            entropy[start:stop] = ent
        if g_lp is None:
            continue
        p = e_buf[:c].div_(sums.unsqueeze(1))
        # d log p_y / d s = onehot(y) - p  ->  hidden: W[y] - p @ W
        torch.mm(p, w_c, out=g_lp[start:stop])
        g_lp[start:stop].neg_().add_(w_c[ids[start:stop]])
        if g_ent is not None:
            # d H / d s = -p * (log p + H) = -(exp(z) z / Z + p (H - log Z)); z holds exp(z) z
            q = z.div_(sums.unsqueeze(1)).add_(p.mul_((ent - log_sums).unsqueeze(1)))
            torch.mm(q, w_c, out=g_ent[start:stop])
            g_ent[start:stop].neg_()
    for g in (g_lp, g_ent):
        if g is not None and inv_t != 1.0:
            g.mul_(inv_t)
    return logprobs, entropy, g_lp, g_ent


@_no_autocast
def _logprob_backward(go_lp, go_ent, h, w, b, ids, inv_t, chunk, needs):
    need_h, need_w, need_b = needs
    dt = compute_dtype(h, w, b)
    w_c, b_c = _cast(w, dt), _cast(b, dt)
    n, v = h.shape[0], w.shape[0]
    grad_h = torch.empty(n, h.shape[1], dtype=dt, device=h.device) if need_h else None
    grad_w = torch.zeros(v, w.shape[1], dtype=dt, device=h.device) if need_w else None
    grad_b = torch.zeros(v, dtype=dt, device=h.device) if need_b else None
    go_lp = go_lp.detach().to(dt)
    go_ent = None if go_ent is None else go_ent.detach().to(dt)
    z_buf, e_buf = _buffers(2, min(chunk, n), v, h, dt)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        c = stop - start
        h_c = h[start:stop].detach().to(dt)
        z = _logits_into(z_buf[:c], h_c, w_c, b_c, inv_t)
        ids_c = ids[start:stop]
        _, ent, sums, log_sums = _logprob_chunk(z, e_buf[:c], ids_c, go_ent is not None)
        a = go_lp[start:stop].unsqueeze(1)
        # g = go_lp * (onehot - p) - go_ent * p * (log p + H)
        #   = go_lp * onehot - (go_ent * exp(z) z + exp(z) * (go_lp + go_ent * (H - log Z))) / Z
        if go_ent is not None:
            b_ent = go_ent[start:stop].unsqueeze(1)
            e_buf[:c].mul_(a + b_ent * (ent - log_sums).unsqueeze(1))
            g = z.mul_(b_ent).add_(e_buf[:c]).div_(-sums.unsqueeze(1))
        else:
            g = e_buf[:c].mul_(a).div_(-sums.unsqueeze(1))
        g.scatter_add_(1, ids_c.unsqueeze(1), a)
        if inv_t != 1.0:
            g.mul_(inv_t)
        if grad_h is not None:
            torch.mm(g, w_c, out=grad_h[start:stop])
        if grad_w is not None:
            grad_w.addmm_(g.t(), h_c)
        if grad_b is not None:
            grad_b.add_(g.sum(0))
    return grad_h, grad_w, grad_b


class _ChunkedLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, b, ids, inv_t, chunk, want_entropy):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = b is not None and ctx.needs_input_grad[2]
        hidden_only = need_h and not need_w and not need_b
        lp, ent, g_lp, g_ent = _logprob_forward(h, w, b, ids, inv_t, chunk, want_entropy, hidden_only)
        ctx.hidden_only = hidden_only
        ctx.h_dtype = h.dtype
        ctx.args = (inv_t, chunk)
        ctx.needs = (need_h, need_w, need_b)
        ctx.want_entropy = want_entropy
        if hidden_only:
            ctx.save_for_backward(g_lp, g_ent)
        else:
            ctx.save_for_backward(h, w, b, ids)
        if want_entropy:
            return lp, ent
        return lp

    @staticmethod
    @once_differentiable
    def backward(ctx, go_lp, go_ent=None):
        if not ctx.want_entropy:
            go_ent = None
        nones = (None, None, None, None)
        if ctx.hidden_only:
            g_lp, g_ent = ctx.saved_tensors
            grad_h = g_lp * go_lp.to(g_lp.dtype).unsqueeze(1)
            if go_ent is not None:
                grad_h = grad_h + g_ent * go_ent.to(g_ent.dtype).unsqueeze(1)
            return (grad_h.to(ctx.h_dtype), None, None) + nones
        h, w, b, ids = ctx.saved_tensors
        grad_h, grad_w, grad_b = _logprob_backward(go_lp, go_ent, h, w, b, ids, *ctx.args, ctx.needs)
        return (
            None if grad_h is None else grad_h.to(h.dtype),
            None if grad_w is None else grad_w.to(w.dtype),
            None if grad_b is None else grad_b.to(b.dtype),
        ) + nones


def chunked_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    chunk_size: int = 1024,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of given tokens (and optionally full-vocabulary entropies) from hidden states.

    `log softmax((hidden @ weight.T + bias) / temperature)[i, token_ids[i]]`, computed
    `chunk_size` rows at a time; differentiable w.r.t. hidden, weight and bias with the same
    memory-bounded backward as `chunked_divergence`.

    Args:
        hidden: `[N, H]` final hidden states at the positions that predict `token_ids`.
        weight: `[V, H]` lm_head weight.
        token_ids: `[N]` integer ids in [0, V).
        chunk_size: rows per chunk.
        temperature: > 0.
        bias: optional `[V]`.
        return_entropy: also return the entropy of each row's distribution.

    Returns:
        `[N]` float32 log-probs (float64 for float64 inputs), or `(logprobs, entropy)`.
    """
    fn = "chunked_token_logprobs"
    _check_lm_pair(fn, "hidden", hidden, "weight", weight)
    _check_bias(fn, "bias", bias, "weight", weight)
    if not isinstance(token_ids, torch.Tensor) or token_ids.is_floating_point() or token_ids.dtype == torch.bool:
        got = getattr(token_ids, "dtype", type(token_ids).__name__)
        raise ValueError(f"{fn}: token_ids must be an integer tensor, got {got}")
    if tuple(token_ids.shape) != (hidden.shape[0],):
        raise ValueError(
            f"{fn}: token_ids has shape {tuple(token_ids.shape)} but hidden has shape "
            f"{tuple(hidden.shape)}; expected token_ids of shape ({hidden.shape[0]},)"
        )
    if token_ids.numel() > 0:
        lo, hi = int(token_ids.min()), int(token_ids.max())
        if lo < 0 or hi >= weight.shape[0]:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{fn}: token id {bad} is outside the vocabulary [0, {weight.shape[0]}) of weight")
    check_positive(fn, "temperature", temperature)
    _check_chunk_size(fn, chunk_size)

    ids = token_ids.long()
    inv_t = 1.0 / temperature
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    if not needs_grad:
        with torch.no_grad():
            lp, ent, _, _ = _logprob_forward(hidden, weight, bias, ids, inv_t, chunk_size, return_entropy, False)
        return (lp, ent) if return_entropy else lp
    return _ChunkedLogprobs.apply(hidden, weight, bias, ids, inv_t, chunk_size, return_entropy)
