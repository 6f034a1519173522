"""Visual advantage, rollout weights, grouped loss, VA-OPD and the VA mask ablation, against
slow Python-loop references in float64."""

from __future__ import annotations

import math
import statistics
from fractions import Fraction

import pytest
import torch

from vlm_opd.algorithms import (
    grouped_token_loss,
    opd_loss,
    rollout_weights,
    va_opd_loss,
    va_token_mask,
    visual_advantage,
)
from vlm_opd.errors import NumericsError

# ------------------------------------------------------------------ references (Python loops)


def _n_high(n: int, top_frac: float) -> int:
    """ceil(top_frac * n) in exact decimal arithmetic, at least 1, at most n - 1 when n >= 2."""
    k = math.ceil(Fraction(str(top_frac)) * n)
    return min(max(k, 1), n - 1) if n >= 2 else n


def _n_drop(n: int, frac: float) -> int:
    """round-half-up(frac * n) exactly, at least 1 and at most n - 1 when n >= 2, else 0."""
    if n < 2:
        return 0
    k = math.floor(Fraction(str(frac)) * n + Fraction(1, 2))
    return min(max(k, 1), n - 1)


def _valid_positions(mask_row) -> list[int]:
    return [t for t, m in enumerate(mask_row) if m]


def _high_set(va_row, mask_row, top_frac) -> set[int]:
    idx = _valid_positions(mask_row)
    order = sorted(idx, key=lambda t: (-va_row[t], t))
    return set(order[: _n_high(len(idx), top_frac)])


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _ref_grouped_row(loss_row, va_row, mask_row, top_frac, lam, keep_row=None) -> float:
    idx = _valid_positions(mask_row)
    keep = set(idx) if keep_row is None else {t for t in idx if keep_row[t]}
    if len(idx) == 0:
        return 0.0
    if len(idx) == 1:
        return _mean(loss_row[t] for t in idx if t in keep)
    high = _high_set(va_row, mask_row, top_frac)
    low = set(idx) - high
    return lam * _mean(loss_row[t] for t in high if t in keep) + (1 - lam) * _mean(
        loss_row[t] for t in low if t in keep
    )


def _ref_weights(mean_va_row, tau, eps=1e-6) -> list[float]:
    k = len(mean_va_row)
    if k == 1:
        return [1.0]
    mu = statistics.mean(mean_va_row)
    sd = statistics.stdev(mean_va_row)
    z = [(a - mu) / (sd + eps) for a in mean_va_row]
    ex = [math.exp(v / tau) for v in z]
    return [v / sum(ex) for v in ex]


def _ref_va_opd(kl, va, mask, tau, top_frac, lam, reweight, grouped, keep=None) -> float:
    kl, va, mask = kl.double().tolist(), va.double().tolist(), mask.tolist()
    keep = None if keep is None else keep.tolist()
    total = 0.0
    for p in range(len(kl)):
        k = len(kl[p])
        mean_va = [_mean(va[p][j][t] for t in _valid_positions(mask[p][j])) for j in range(k)]
        w = _ref_weights(mean_va, tau) if reweight else [1.0 / k] * k
        for j in range(k):
            keep_row = None if keep is None else keep[p][j]
            if grouped:
                lj = _ref_grouped_row(kl[p][j], va[p][j], mask[p][j], top_frac, lam, keep_row)
            else:
                idx = [t for t in _valid_positions(mask[p][j]) if keep_row is None or keep_row[t]]
                lj = _mean(kl[p][j][t] for t in idx)
            total += w[j] * lj
    return total / len(kl)


def _batch(p: int, k: int, t: int, ties: bool = False, lengths=None):
    """Random KL, VA (with zeros and optional ties) and a padding mask with varied lengths."""
    kl = torch.rand(p, k, t, dtype=torch.float64) * 2
    va = torch.relu(torch.randn(p, k, t, dtype=torch.float64))
    if ties:
        va = torch.round(va * 2) / 2  # few distinct values -> many ties
    if lengths is None:
        lengths = torch.randint(0, t + 1, (p, k))
    mask = torch.arange(t).expand(p, k, t) < lengths.unsqueeze(-1)
    # garbage at padding must be ignored
    kl = kl.masked_fill(~mask, float("nan"))
    va = va.masked_fill(~mask, float("inf"))
    return kl, va, mask


# --------------------------------------------------------------------------- visual advantage


def test_visual_advantage_rectifies_masks_and_detaches():
    real = torch.tensor([[-0.1, -2.0, -0.5, float("nan")]], requires_grad=True)
    degraded = torch.tensor([[-3.0, -1.0, -0.5, -1.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    a = visual_advantage(real, degraded, mask)
    torch.testing.assert_close(a, torch.tensor([[2.9, 0.0, 0.0, 0.0]]))
    assert not a.requires_grad
    assert visual_advantage(real.bfloat16(), degraded.bfloat16(), mask).dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(1, 4\).*\(1, 3\)"):
        visual_advantage(real, degraded, mask[:, :3])


# ---------------------------------------------------------------------------- rollout weights


def test_rollout_weights_match_reference_and_sum_to_one():
    mean_va = torch.rand(6, 4, dtype=torch.float64)
    for tau in (1.0, 0.3):
        w = rollout_weights(mean_va, tau=tau)
        ref = torch.tensor([_ref_weights(r, tau) for r in mean_va.tolist()], dtype=torch.float64)
        torch.testing.assert_close(w, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(w.sum(-1), torch.ones(6, dtype=torch.float64))


def test_rollout_weights_order_follow_mean_va():
    mean_va = torch.tensor([[0.1, 0.5, 0.3, 0.0], [2.0, 1.0, 1.5, 1.2]])
    w = rollout_weights(mean_va)
    assert torch.equal(torch.argsort(w, dim=-1), torch.argsort(mean_va, dim=-1))
    sharper = rollout_weights(mean_va, tau=0.1)
    assert (sharper.max(-1).values > w.max(-1).values).all()


def test_rollout_weights_edge_cases():
    assert torch.equal(rollout_weights(torch.tensor([[0.7], [0.0]])), torch.ones(2, 1))
    torch.testing.assert_close(rollout_weights(torch.full((2, 4), 0.3)), torch.full((2, 4), 0.25))
    torch.testing.assert_close(rollout_weights(torch.full((1, 3), 0.3), eps=0.0), torch.full((1, 3), 1 / 3))
    x = torch.rand(2, 3, requires_grad=True)
    assert not rollout_weights(x).requires_grad
    with pytest.raises(ValueError, match="tau"):
        rollout_weights(torch.rand(2, 3), tau=0.0)
    with pytest.raises(ValueError, match=r"\[P, K\]"):
        rollout_weights(torch.rand(6))


# --------------------------------------------------------------------------- grouped loss


@pytest.mark.parametrize("top_frac,lam", [(0.2, 0.5), (0.5, 0.0), (0.9, 1.0), (0.33, 0.7)])
@pytest.mark.parametrize("ties", [False, True])
def test_grouped_token_loss_matches_reference(top_frac, lam, ties):
    kl, va, mask = _batch(1, 24, 9, ties=ties)
    kl, va, mask = kl[0], va[0], mask[0]
    out = grouped_token_loss(kl, va, mask, top_frac=top_frac, lam=lam)
    ref = [_ref_grouped_row(*rows, top_frac, lam) for rows in zip(kl.tolist(), va.tolist(), mask.tolist())]
    torch.testing.assert_close(out, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_grouped_loss_small_lengths_ties_and_round_off():
    # T = 0 -> 0; T = 1 -> its loss (not lam times it); T = 2 -> one token per group.
    loss = torch.tensor([[5.0, 7.0, 9.0], [5.0, 7.0, 9.0], [5.0, 7.0, 9.0]])
    va = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    mask = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    out = grouped_token_loss(loss, va, mask, top_frac=0.2, lam=0.9)
    torch.testing.assert_close(out, torch.tensor([0.0, 5.0, 0.9 * 7.0 + 0.1 * 5.0]))
    # all-equal VA: ties go to the earlier positions, so the first ceil(0.2*T) tokens are "high".
    t = 100  # 0.07 * 100 = 7.000000000000001 in floats: must still be 7 tokens, not 8
    loss = torch.arange(t, dtype=torch.float64).unsqueeze(0)
    out = grouped_token_loss(loss, torch.zeros(1, t, dtype=torch.float64), torch.ones(1, t), top_frac=0.07, lam=1.0)
    assert out.item() == pytest.approx(sum(range(7)) / 7)


def test_grouped_loss_gradient_and_validation():
    kl, va, mask = _batch(1, 4, 6, lengths=torch.tensor([[6, 3, 2, 1]]))
    kl = kl[0].nan_to_num(0.0).requires_grad_()
    va = va[0].nan_to_num(0.0, posinf=0.0).requires_grad_()
    grouped_token_loss(kl, va, mask[0]).sum().backward()
    assert va.grad is None
    assert kl.grad[~mask[0]].abs().sum() == 0 and kl.grad[mask[0]].abs().sum() > 0
    with pytest.raises(ValueError, match="top_frac"):
        grouped_token_loss(kl, va, mask[0], top_frac=1.0)
    with pytest.raises(ValueError, match="top_frac"):
        grouped_token_loss(kl, va, mask[0], top_frac=0.0)
    with pytest.raises(ValueError, match="lam"):
        grouped_token_loss(kl, va, mask[0], lam=1.5)
    bad = va.detach().clone()
    bad[0, 0] = float("nan")
    with pytest.raises(NumericsError, match="va"):
        grouped_token_loss(kl, bad, mask[0])


# ----------------------------------------------------------------------------------- VA-OPD


@pytest.mark.parametrize("reweight", [True, False])
@pytest.mark.parametrize("grouped", [True, False])
@pytest.mark.parametrize("with_keep", [False, True])
def test_va_opd_loss_matches_reference(reweight, grouped, with_keep):
    kl, va, mask = _batch(5, 4, 8, ties=True)
    keep = (torch.rand(mask.shape) > 0.3) if with_keep else None
    loss, _ = va_opd_loss(kl, va, mask, tau=0.8, top_frac=0.25, lam=0.6, reweight=reweight, grouped=grouped, token_keep=keep)
    ref = _ref_va_opd(kl, va, mask, 0.8, 0.25, 0.6, reweight, grouped, keep)
    assert loss.item() == pytest.approx(ref, rel=1e-10, abs=1e-12)


def test_va_opd_with_both_components_off_is_standard_opd():
    kl, va, mask = _batch(3, 4, 7)
    loss, _ = va_opd_loss(kl, va, mask, reweight=False, grouped=False)
    opd, opd_diags = opd_loss(kl.reshape(12, 7), mask.reshape(12, 7))
    torch.testing.assert_close(loss, opd, rtol=1e-14, atol=1e-14)
    ref = _mean(_mean(r[t] for t in _valid_positions(m)) for r, m in zip(kl.reshape(12, 7).tolist(), mask.reshape(12, 7).tolist()))
    assert opd.item() == pytest.approx(ref, rel=1e-12)
    assert opd_diags["n_tokens"] == mask.sum().item()


def test_va_opd_gradients_flow_to_kl_only():
    kl, va, mask = _batch(2, 3, 6, lengths=torch.tensor([[6, 4, 5], [2, 6, 3]]))
    kl = kl.nan_to_num(0.0).float().requires_grad_()
    va = va.nan_to_num(0.0, posinf=0.0).float().requires_grad_()
    loss, diags = va_opd_loss(kl, va, mask)
    loss.backward()
    assert va.grad is None
    assert kl.grad[~mask].abs().sum() == 0
    # With reweighting on, each rollout's gradient mass equals its weight / P.
    w = rollout_weights(torch.stack([(va * mask).sum(-1) / mask.sum(-1)]).reshape(2, 3).detach())
    torch.testing.assert_close(kl.grad.sum(-1), w / 2, rtol=1e-5, atol=1e-6)
    assert all(isinstance(v, float) for v in diags.values())


def test_va_opd_diagnostics_match_reference():
    kl, va, mask = _batch(4, 3, 10, ties=True)
    _, d = va_opd_loss(kl, va, mask, top_frac=0.2, tau=0.5)
    vals = [v for v, m in zip(va.reshape(-1).tolist(), mask.reshape(-1).tolist()) if m]
    kls = [v for v, m in zip(kl.reshape(-1).tolist(), mask.reshape(-1).tolist()) if m]
    assert d["mean_va"] == pytest.approx(_mean(vals))
    top = sorted(vals, reverse=True)[: math.ceil(Fraction(1, 10) * len(vals))]
    assert d["top10_va_share"] == pytest.approx(sum(top) / sum(vals))
    assert d["frac_va_positive"] == pytest.approx(_mean(1.0 if v > 0 else 0.0 for v in vals))
    assert d["kl_mean"] == pytest.approx(_mean(kls))
    high_kl, low_kl, ents, maxes = [], [], [], []
    for p in range(4):
        mean_va = []
        for j in range(3):
            m_row, v_row, k_row = mask[p, j].tolist(), va[p, j].tolist(), kl[p, j].tolist()
            idx = _valid_positions(m_row)
            mean_va.append(_mean(v_row[t] for t in idx))
            high = _high_set(v_row, m_row, 0.2)
            high_kl += [k_row[t] for t in idx if t in high]
            low_kl += [k_row[t] for t in idx if t not in high]
        w = _ref_weights(mean_va, 0.5)
        ents.append(-sum(x * math.log(x) for x in w if x > 0))
        maxes.append(max(w))
    assert d["kl_high"] == pytest.approx(_mean(high_kl))
    assert d["kl_low"] == pytest.approx(_mean(low_kl))
    assert d["weight_entropy"] == pytest.approx(_mean(ents))
    assert d["weight_max"] == pytest.approx(_mean(maxes))


def test_va_opd_edge_cases_and_validation():
    # K = 1, T = 0/1/2 rows, all-zero VA: finite loss, no NaN.
    kl = torch.rand(3, 1, 2)
    mask = torch.tensor([[[0, 0]], [[1, 0]], [[1, 1]]])
    loss, d = va_opd_loss(kl, torch.zeros(3, 1, 2), mask)
    expected = (0.0 + kl[1, 0, 0] + 0.5 * kl[2, 0, 0] + 0.5 * kl[2, 0, 1]) / 3
    torch.testing.assert_close(loss, expected)
    assert d["top10_va_share"] == 0.0 and d["weight_entropy"] == 0.0
    with pytest.raises(ValueError, match=r"\[P, K, T\]"):
        va_opd_loss(torch.rand(4, 5), torch.rand(4, 5), torch.ones(4, 5))
    with pytest.raises(ValueError, match="mask"):
        va_opd_loss(kl, kl, torch.ones(3, 1, 3))
    with pytest.raises(ValueError, match="tau"):
        va_opd_loss(kl, kl, mask, tau=-1.0)


# ----------------------------------------------------------------------------- mask ablation


@pytest.mark.parametrize("which", ["top", "bottom"])
def test_va_token_mask_drops_the_right_tokens(which):
    _, va, mask = _batch(1, 30, 23, ties=True)
    va, mask = va[0].float(), mask[0]
    keep = va_token_mask(va, mask, which=which, frac=0.1, generator=torch.Generator().manual_seed(0))
    assert keep.dtype == mask.dtype
    for v_row, m_row, k_row in zip(va.tolist(), mask.tolist(), keep.tolist()):
        idx = _valid_positions(m_row)
        dropped = [t for t in idx if not k_row[t]]
        kept = [t for t in idx if k_row[t]]
        assert all(not k_row[t] for t in range(23) if t not in idx)  # padding is never kept
        assert len(dropped) == _n_drop(len(idx), 0.1)
        # The dropped tokens are an extreme-VA set: none of them is less extreme than a kept one
        # (which of several equal-VA tokens goes is a random tie-break, tested below).
        sign = -1 if which == "top" else 1
        ref = sorted(sign * v_row[t] for t in idx)[: len(dropped)]
        assert sorted(sign * v_row[t] for t in dropped) == ref
        if dropped and kept:
            assert max(sign * v_row[t] for t in dropped) <= min(sign * v_row[t] for t in kept)


@pytest.mark.parametrize("which", ["top", "bottom"])
def test_va_token_mask_breaks_ties_at_random_not_by_position(which):
    # 20 tokens with VA 0 and 2 with VA 5: "bottom" drops 2 of the zeros. By position it would
    # always drop positions 0 and 1; with a random tie-break every zero is dropped about equally often.
    va = torch.zeros(1, 22)
    va[0, 10], va[0, 15] = 5.0, 5.0
    mask = torch.ones(1, 22)
    counts = torch.zeros(22)
    for seed in range(400):
        keep = va_token_mask(va, mask, which=which, frac=0.1, generator=torch.Generator().manual_seed(seed))
        counts += 1 - keep[0]
    if which == "top":  # ties among the two 5s: both dropped (n_drop = 2), the zeros never
        assert counts[10] == counts[15] == 400 and counts.sum() == 800
        return
    assert counts[10] == counts[15] == 0
    zeros = torch.cat([counts[:10], counts[11:15], counts[16:]])
    # Each zero is dropped with probability 2/20 = 0.1: 40 of 400 expected, sd 6. A position-ordered
    # tie-break gives 400, 400, 0, 0, ...
    assert zeros.min() >= 15 and zeros.max() <= 70
    # Same seed, same mask; the draw happens on the generator's device (CPU here) and moves to va's.
    a = va_token_mask(va, mask, which=which, generator=torch.Generator().manual_seed(7))
    b = va_token_mask(va, mask, which=which, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_va_token_mask_random_counts_and_determinism():
    _, va, mask = _batch(1, 40, 25)
    va, mask = va[0], mask[0].float()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = va_token_mask(va, mask, which="random", frac=0.2, generator=g1)
    b = va_token_mask(va, mask, which="random", frac=0.2, generator=g2)
    c = va_token_mask(va, mask, which="random", frac=0.2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32
    assert ((a == 1) <= (mask == 1)).all()  # only valid tokens are kept
    dropped = (mask - a).sum(-1).tolist()
    assert dropped == [_n_drop(int(n), 0.2) for n in mask.sum(-1).tolist()]


def test_va_token_mask_small_rollouts_and_errors():
    va = torch.tensor([[0.5, 0.1, 0.0], [0.5, 0.1, 0.0], [0.5, 0.9, 0.0]])
    mask = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    keep = va_token_mask(va, mask, which="top")
    assert keep.tolist() == [[0, 0, 0], [1, 0, 0], [1, 0, 0]]  # T=2 drops exactly one token
    # 0.35 * 90 = 31.499999999999996 in floats; exactly 31.5 rounds half up to 32.
    keep = va_token_mask(torch.rand(1, 90), torch.ones(1, 90), which="bottom", frac=0.35)
    assert keep.sum().item() == 90 - 32
    with pytest.raises(ValueError, match="top, bottom, random"):
        va_token_mask(va, mask, which="middle")
    with pytest.raises(ValueError, match="frac"):
        va_token_mask(va, mask, frac=0.0)


def test_mask_ablation_plugs_into_va_opd():
    kl, va, mask = _batch(2, 3, 12, lengths=torch.full((2, 3), 12))
    keep = va_token_mask(va.reshape(6, 12), mask.reshape(6, 12), which="top", frac=0.25).reshape(2, 3, 12)
    loss, _ = va_opd_loss(kl, va, mask, reweight=False, grouped=False, token_keep=keep)
    ref = _ref_va_opd(kl, va, mask, 1.0, 0.2, 0.5, False, False, keep)
    assert loss.item() == pytest.approx(ref, rel=1e-12)
    # Dropping the highest-VA tokens removes exactly them: 3 of 12 per rollout.
    assert (keep.sum(-1) == 9).all()
