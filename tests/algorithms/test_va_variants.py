"""VA variants beside the paper's definition: position-level `teacher_shift_va` (against a plain float64
reference and a hand-computed misread digit) and the `high_group="positive"` grouping."""

from __future__ import annotations

import math

import pytest
import torch

from vlm_opd.algorithms import grouped_token_loss, teacher_shift_va, va_opd_loss, visual_advantage

# ------------------------------------------------------------------------------ teacher_shift_va


def _ref_shift(h_real, h_deg, weight, mask, divergence):
    """Plain float64: full [N, V] logits, log-softmax, the divergence per row."""
    lr = torch.log_softmax(h_real.double() @ weight.double().T, -1)
    ld = torch.log_softmax(h_deg.double() @ weight.double().T, -1)
    if divergence == "kl_real_degraded":
        out = (lr.exp() * (lr - ld)).sum(-1)
    elif divergence == "kl_degraded_real":
        out = (ld.exp() * (ld - lr)).sum(-1)
    else:
        lm = torch.logaddexp(lr, ld) - math.log(2)
        out = 0.5 * (lr.exp() * (lr - lm)).sum(-1) + 0.5 * (ld.exp() * (ld - lm)).sum(-1)
    return out * mask.double()


@pytest.mark.parametrize("divergence", ["kl_real_degraded", "kl_degraded_real", "jsd"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_teacher_shift_matches_float64_reference(divergence, dtype):
    g = torch.Generator().manual_seed(0)
    b, t, h, v = 3, 7, 16, 50
    h_real = torch.randn(b, t, h, generator=g, dtype=dtype)
    h_deg = h_real + 0.7 * torch.randn(b, t, h, generator=g, dtype=dtype)
    weight = torch.randn(v, h, generator=g, dtype=dtype)
    mask = (torch.arange(t) < torch.tensor([[7], [3], [0]])).float()
    h_deg_garbage = h_deg.masked_fill(~mask.bool().unsqueeze(-1), float("nan"))  # padding is ignored
    got = teacher_shift_va(h_real, h_deg_garbage, weight, mask, divergence=divergence, chunk_size=4)
    ref = _ref_shift(h_real, h_deg, weight, mask, divergence)  # from the same (bf16-rounded) values
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol)
    assert (got[mask == 0] == 0).all() and (got >= 0).all() and not got.requires_grad


def test_teacher_shift_identical_images_is_zero_and_validation():
    h = torch.randn(2, 5, 8)
    w = torch.randn(30, 8)
    out = teacher_shift_va(h, h.clone(), w, torch.ones(2, 5))
    assert out.abs().max() < 1e-6
    assert teacher_shift_va(h, h, w, torch.zeros(2, 5)).eq(0).all()
    with pytest.raises(ValueError, match="divergence"):
        teacher_shift_va(h, h, w, torch.ones(2, 5), divergence="tv")
    with pytest.raises(ValueError, match="hidden_degraded"):
        teacher_shift_va(h, h[:, :4], w, torch.ones(2, 5))
    with pytest.raises(ValueError, match="mask"):
        teacher_shift_va(h, h, w, torch.ones(2, 4))


def test_misread_digit_keeps_high_teacher_shift_but_gets_zero_sampled_va():
    """Vocabulary: digits "1", "2", "3" (ids 0-2) and a scaffold word (id 3); lm_head = identity, so
    hidden states are the logits. Position 0 predicts a digit printed as "2": the real-image teacher
    puts logit 8 on it, the degraded-image teacher is uniform over the digits. Position 1 is scaffold,
    the same under both images. The student wrote "3" at position 0 (a misread)."""
    weight = torch.eye(4, dtype=torch.float64)
    real = torch.tensor([[[0.0, 8.0, 0.0, -30.0], [-30.0, -30.0, -30.0, 5.0]]], dtype=torch.float64)
    deg = torch.tensor([[[0.0, 0.0, 0.0, -30.0], [-30.0, -30.0, -30.0, 5.0]]], dtype=torch.float64)
    mask = torch.ones(1, 2)
    # By hand: p_real = softmax(0, 8, 0) on the digits (scaffold ~e^-30), p_deg = 1/3 each.
    z = 2 + math.exp(8)
    p = [1 / z, math.exp(8) / z, 1 / z]
    kl_hand = sum(pi * math.log(pi * 3) for pi in p)  # KL(p_real || uniform) = ln 3 - H(p_real)
    shift = teacher_shift_va(real, deg, weight, mask)
    assert shift[0, 0].item() == pytest.approx(kl_hand, rel=1e-9)
    assert kl_hand > 1.09  # nearly ln 3 = 1.0986: the position needs the image
    assert shift[0, 1].item() == pytest.approx(0.0, abs=1e-12)
    # The paper's sampled VA of the misread "3": log p_real(3) - log p_deg(3) = ln(1/z) - ln(1/3) < 0 -> 0.
    lp_real = torch.log_softmax(real @ weight.T, -1)
    lp_deg = torch.log_softmax(deg @ weight.T, -1)
    ids = torch.tensor([[2, 3]])
    sampled = visual_advantage(lp_real.gather(-1, ids.unsqueeze(-1))[..., 0], lp_deg.gather(-1, ids.unsqueeze(-1))[..., 0], mask)
    assert sampled[0, 0].item() == 0.0
    # Read correctly ("2"), both kinds score it high.
    ids_right = torch.tensor([[1, 3]])
    sampled_right = visual_advantage(lp_real.gather(-1, ids_right.unsqueeze(-1))[..., 0],
                                     lp_deg.gather(-1, ids_right.unsqueeze(-1))[..., 0], mask)
    assert sampled_right[0, 0].item() == pytest.approx(math.log(3 * math.exp(8) / z), rel=1e-9)


# ----------------------------------------------------------------------------- high_group positive


def _ref_positive_row(loss_row, va_row, mask_row, top_frac, lam):
    idx = [t for t, m in enumerate(mask_row) if m]
    n = len(idx)
    if n == 0:
        return 0.0
    if n == 1:
        return loss_row[idx[0]]
    cap = min(max(math.ceil(top_frac * n - 1e-9), 1), n - 1)
    order = sorted(idx, key=lambda t: (-va_row[t], t))
    high = [t for t in order[:cap] if va_row[t] > 0]
    low = [t for t in idx if t not in high]
    mean = lambda ts: sum(loss_row[t] for t in ts) / len(ts)  # noqa: E731
    if not high:  # the empty group's weight goes to the other
        return mean(low)
    return lam * mean(high) + (1 - lam) * mean(low)


def test_positive_group_hand_computed():
    # n = 10, top_frac 0.2: the paper's fixed group has 2 tokens, but only position 2 has VA > 0,
    # so "fixed" adds position 0 (the earliest VA = 0 token) and "positive" does not.
    va = torch.tensor([[0, 0, 3.0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.float64)
    kl = torch.tensor([[1.0, 2, 10, 3, 4, 5, 6, 7, 8, 9]], dtype=torch.float64)
    mask = torch.ones(1, 10)
    fixed = grouped_token_loss(kl, va, mask, top_frac=0.2, lam=0.5)
    positive = grouped_token_loss(kl, va, mask, top_frac=0.2, lam=0.5, high_group="positive")
    assert fixed.item() == pytest.approx(0.5 * (10 + 1) / 2 + 0.5 * (2 + 3 + 4 + 5 + 6 + 7 + 8 + 9) / 8)
    assert positive.item() == pytest.approx(0.5 * 10 + 0.5 * (1 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9) / 9)
    # No VA at all: the empty high group's weight goes to the low group -> the plain token mean.
    zero = grouped_token_loss(kl, torch.zeros_like(va), mask, high_group="positive")
    assert zero.item() == pytest.approx(kl.mean().item())
    # A lone token with VA 0 is its own loss (not lam times it), as under "fixed".
    lone = grouped_token_loss(kl[:, :1], va[:, :1], mask[:, :1], high_group="positive")
    assert lone.item() == 1.0
    # Diagnostics: the fixed group is half padding here, the positive one none.
    _, d_fixed = va_opd_loss(kl.view(1, 1, 10), va.view(1, 1, 10), mask.view(1, 1, 10))
    _, d_pos = va_opd_loss(kl.view(1, 1, 10), va.view(1, 1, 10), mask.view(1, 1, 10), high_group="positive")
    assert d_fixed["frac_high_va_zero"] == 0.5 and d_fixed["frac_high"] == 0.2
    assert d_pos["frac_high_va_zero"] == 0.0 and d_pos["frac_high"] == 0.1


def test_positive_group_never_holds_a_zero_va_token_and_matches_reference():
    g = torch.Generator().manual_seed(1)
    p, k, t = 4, 5, 17
    kl = torch.rand(p, k, t, generator=g, dtype=torch.float64)
    # Sparse VA: most tokens exactly 0, as on real rollouts; some rows all zero, some mostly positive.
    va = torch.rand(p, k, t, generator=g, dtype=torch.float64) * (torch.rand(p, k, t, generator=g) < 0.15)
    va[0, 0] = 0.0
    va[1, 1] = torch.rand(t, generator=g, dtype=torch.float64) + 0.1
    lengths = torch.randint(0, t + 1, (p, k), generator=g)
    mask = torch.arange(t).expand(p, k, t) < lengths.unsqueeze(-1)
    loss_rows = grouped_token_loss(kl, va, mask, top_frac=0.2, lam=0.7, high_group="positive")
    for i in range(p):
        for j in range(k):
            ref = _ref_positive_row(kl[i, j].tolist(), va[i, j].tolist(), mask[i, j].tolist(), 0.2, 0.7)
            assert loss_rows[i, j].item() == pytest.approx(ref, rel=1e-12, abs=1e-15)
    _, diags = va_opd_loss(kl, va, mask, high_group="positive")
    assert diags["frac_high_va_zero"] == 0.0
    _, diags_fixed = va_opd_loss(kl, va, mask)
    assert diags_fixed["frac_high_va_zero"] > 0  # the paper's group pads with VA = 0 tokens here
    # Gradients reach every token with positive weight, and reweighting still sums to one per prompt.
    leaf = kl.clone().requires_grad_(True)
    loss, _ = va_opd_loss(leaf, va, mask, high_group="positive")
    loss.backward()
    assert torch.isfinite(leaf.grad).all()
    with pytest.raises(ValueError, match="high_group"):
        va_opd_loss(kl, va, mask, high_group="top")


# ---------------------------------------------------------------------------------------- va_floor


def test_floor_va_keeps_positive_group_to_the_tokens_that_need_the_image():
    from vlm_opd.algorithms import floor_va

    # Scaffold tokens with the tiny positive VA measured on the demo teacher (~1e-3), one digit with VA 7.
    va = torch.tensor([[0.002, 0.001, 7.0, 0.0, 0.0015, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    kl = torch.tensor([[1.0, 2, 10, 3, 4, 5, 6, 7, 8, 9]], dtype=torch.float64)
    mask = torch.ones(1, 10)
    # Without a floor the positive group (cap 2) takes the digit and the 0.002 scaffold token.
    no_floor = grouped_token_loss(kl, va, mask, high_group="positive")
    assert no_floor.item() == pytest.approx(0.5 * (10 + 1) / 2 + 0.5 * (45 + 10 - 10 - 1) / 8)
    floored = floor_va(va, 0.01)
    assert floored.tolist() == [[0, 0, 7.0, 0, 0, 0, 0, 0, 0, 0]]
    with_floor = grouped_token_loss(kl, floored, mask, high_group="positive")
    assert with_floor.item() == pytest.approx(0.5 * 10 + 0.5 * (55 - 10) / 9)
    assert torch.equal(floor_va(va, 0.0), va)  # floor 0 is the paper's VA unchanged
    assert floor_va(va, 7.0).abs().sum() == 0  # values equal to the floor are zeroed too
    with pytest.raises(ValueError, match="floor"):
        floor_va(va, -1.0)
