"""GRPO / DAPO surrogate, reference KL, PAPO perception term and VOLD against loop references."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from vlm_opd.algorithms import (
    grpo_advantages,
    kl_penalty,
    papo_perception_loss,
    policy_loss,
    sampled_token_kl,
    vold_loss,
)


def _mask(b: int, t: int, lengths=None) -> torch.Tensor:
    if lengths is None:
        lengths = torch.randint(0, t + 1, (b,))
    return torch.arange(t).expand(b, t) < torch.as_tensor(lengths).unsqueeze(-1)


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


# ------------------------------------------------------------------------------ advantages


def test_grpo_advantages_match_reference():
    r = torch.rand(5, 4, dtype=torch.float64)
    out = grpo_advantages(r)
    for p, row in enumerate(r.tolist()):
        mu, sd = statistics.mean(row), statistics.stdev(row)
        for k, x in enumerate(row):
            assert out[p, k].item() == pytest.approx((x - mu) / (sd + 1e-6), rel=1e-10)
    torch.testing.assert_close(grpo_advantages(r, scale=False), r - r.mean(-1, keepdim=True))


def test_grpo_advantages_degenerate_groups():
    assert torch.equal(grpo_advantages(torch.tensor([[1.0], [0.0]])), torch.zeros(2, 1))
    torch.testing.assert_close(grpo_advantages(torch.tensor([[1, 0, 0, 1]])), grpo_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]])))
    out = grpo_advantages(torch.ones(3, 5))  # all-equal rewards: no signal, no NaN
    assert torch.equal(out, torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"\[P, K\]"):
        grpo_advantages(torch.ones(6))


# --------------------------------------------------------------------------- policy loss


def _ref_policy(lp, old, adv, mask, eps_lo, eps_hi, loss_type):
    lp, old, mask = lp.double().tolist(), old.double().tolist(), mask.tolist()
    adv = adv.double().tolist()
    per_seq, all_tokens, clipped = [], [], 0
    for b in range(len(lp)):
        tokens = []
        for t in range(len(lp[b])):
            if not mask[b][t]:
                continue
            r = math.exp(lp[b][t] - old[b][t])
            rc = min(max(r, 1 - eps_lo), 1 + eps_hi)
            a = adv[b]
            tokens.append(-min(r * a, rc * a))
            clipped += (a > 0 and r > 1 + eps_hi) or (a < 0 and r < 1 - eps_lo)
        per_seq.append(_mean(tokens))
        all_tokens += tokens
    loss = _mean(all_tokens) if loss_type == "dapo" else _mean(per_seq)
    return loss, clipped / max(len(all_tokens), 1)


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
@pytest.mark.parametrize("eps_hi", [None, 0.28])
def test_policy_loss_matches_reference(loss_type, eps_hi):
    b, t = 6, 9
    old = -torch.rand(b, t, dtype=torch.float64) * 3
    lp = old + torch.randn(b, t, dtype=torch.float64) * 0.3
    adv = torch.randn(b, dtype=torch.float64)
    mask = _mask(b, t, [9, 0, 1, 5, 9, 3])
    loss, d = policy_loss(lp, old, adv, mask, clip_eps=0.2, clip_eps_high=eps_hi, loss_type=loss_type)
    ref, clip_frac = _ref_policy(lp, old, adv, mask, 0.2, 0.2 if eps_hi is None else eps_hi, loss_type)
    assert loss.item() == pytest.approx(ref, rel=1e-10)
    assert d["clip_frac"] == pytest.approx(clip_frac)
    assert 0 < d["clip_frac"] < 1  # the test data exercises both branches


def test_policy_loss_on_policy_value_and_gradient():
    # ratio == 1: loss = -mean(A) over tokens, gradient = -A / n_tokens (dapo).
    lp = (-torch.rand(3, 4)).requires_grad_()
    adv = torch.tensor([1.0, -2.0, 0.5])
    mask = _mask(3, 4, [4, 2, 3])
    loss, d = policy_loss(lp, lp.detach(), adv, mask)
    expected = -(4 * 1.0 + 2 * -2.0 + 3 * 0.5) / 9
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    torch.testing.assert_close(lp.grad, -adv.unsqueeze(-1).expand(3, 4) * mask / 9)
    assert d["ratio_mean"] == pytest.approx(1.0) and d["clip_frac"] == 0.0


def test_dapo_token_normalizer_makes_micro_batches_add_up_to_the_whole_batch():
    b, t = 6, 7
    old = -torch.rand(b, t, dtype=torch.float64) * 2
    lp = (old + torch.randn(b, t, dtype=torch.float64) * 0.3).requires_grad_()
    adv = torch.randn(b, dtype=torch.float64)
    mask = _mask(b, t, [7, 1, 2, 7, 6, 0])  # the halves have 10 and 13 tokens
    whole, _ = policy_loss(lp, old, adv, mask)
    (g_whole,) = torch.autograd.grad(whole, lp)
    n = float(mask.sum())
    halves = [policy_loss(lp[i:i + 3], old[i:i + 3], adv[i:i + 3], mask[i:i + 3], token_normalizer=n / 2)[0]
              for i in (0, 3)]
    accumulated = sum(h / 2 for h in halves)  # what a trainer with grad_accum=2 back-propagates
    assert accumulated.item() == pytest.approx(whole.item(), rel=1e-12)
    (g_acc,) = torch.autograd.grad(accumulated, lp)
    torch.testing.assert_close(g_acc, g_whole)
    # the per-micro-batch token mean (no normalizer) does not add up when the halves differ in tokens
    naive = sum(policy_loss(lp[i:i + 3], old[i:i + 3], adv[i:i + 3], mask[i:i + 3])[0] / 2 for i in (0, 3))
    assert abs(naive.item() - whole.item()) > 1e-3
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="token_normalizer"):
            policy_loss(lp, old, adv, mask, token_normalizer=bad)


def test_policy_loss_token_advantages_extremes_and_errors():
    lp = torch.zeros(2, 3, requires_grad=True)
    old = torch.tensor([[-1000.0, 0.0, 0.0], [0.0, 1000.0, 0.0]])  # log-ratios of +-1000
    adv = torch.tensor([[-1.0, 1.0, 1.0], [1.0, -1.0, 1.0]])
    loss, _ = policy_loss(lp, old, adv, torch.ones(2, 3), loss_type="grpo")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(lp, old, torch.ones(3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="dapo, grpo"):
        policy_loss(lp, old, torch.ones(2), torch.ones(2, 3), loss_type="ppo")


def test_kl_penalty_is_token_mean_of_estimator():
    lp = -torch.rand(4, 5, dtype=torch.float64)
    ref = -torch.rand(4, 5, dtype=torch.float64)
    mask = _mask(4, 5, [5, 1, 0, 3])
    for est in ("k1", "k2", "k3"):
        per_tok = sampled_token_kl(lp, ref, est)
        expected = per_tok[mask].mean()
        torch.testing.assert_close(kl_penalty(lp, ref, mask, estimator=est), expected)
    assert kl_penalty(lp, lp, mask).item() == 0.0


# ----------------------------------------------------------------------------------- PAPO


def _ref_papo(lp, lpm, mask, gamma, clamp, coef, ent=None, ent_m=None):
    lp, lpm, mask = lp.double().tolist(), lpm.double().tolist(), mask.tolist()
    kls, hs, hms = [], [], []
    for b in range(len(lp)):
        for t in range(len(lp[b])):
            if mask[b][t]:
                d = lpm[b][t] - lp[b][t]
                kls.append(min(math.exp(d) - d - 1, clamp))
                hs.append(-lp[b][t] if ent is None else float(ent[b][t]))
                hms.append(-lpm[b][t] if ent_m is None else float(ent_m[b][t]))
    return -gamma * _mean(kls) + coef * (_mean(hs) + _mean(hms))


def test_papo_matches_reference_and_signs():
    lp = -torch.rand(3, 6, dtype=torch.float64) * 2
    lpm = lp + torch.randn(3, 6, dtype=torch.float64) * 2  # some k3 above the clamp
    mask = _mask(3, 6, [6, 4, 2])
    loss, d = papo_perception_loss(lp, lpm, mask, gamma=0.02, kl_clamp=1.0, entropy_coef=0.05)
    assert loss.item() == pytest.approx(_ref_papo(lp, lpm, mask, 0.02, 1.0, 0.05), rel=1e-10)
    assert 0 < d["perception_kl_clamped_frac"] < 1
    ent, ent_m = torch.rand(3, 6), torch.rand(3, 6)
    loss, _ = papo_perception_loss(lp, lpm, mask, entropy=ent, entropy_masked=ent_m)
    assert loss.item() == pytest.approx(_ref_papo(lp, lpm, mask, 0.01, 10.0, 0.03, ent, ent_m), rel=1e-6)
    # Perception term is maximised: more image dependence -> lower loss.
    near, _ = papo_perception_loss(lp, lp + 0.01, mask, entropy_coef=0.0)
    far, _ = papo_perception_loss(lp, lp - 1.0, mask, entropy_coef=0.0)
    assert far < near < 0


def test_papo_masked_branch_is_detached_and_clamp_is_safe():
    lp = (-torch.rand(2, 4)).requires_grad_()
    lpm = (lp.detach() + torch.tensor([[200.0, -300.0, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])).requires_grad_()
    loss, d = papo_perception_loss(lp, lpm, torch.ones(2, 4), entropy_coef=0.0)
    loss.backward()
    assert lpm.grad is None
    assert torch.isfinite(lp.grad).all()
    assert lp.grad[0, 0] == 0 and lp.grad[0, 1] == 0  # clamped tokens: no gradient
    assert lp.grad[0, 2] != 0
    assert d["perception_kl_clamped_frac"] == pytest.approx(2 / 8)
    with pytest.raises(ValueError, match="kl_clamp"):
        papo_perception_loss(lp, lpm, torch.ones(2, 4), kl_clamp=0.0)


# ----------------------------------------------------------------------------------- VOLD


def test_vold_all_and_failed_only():
    kl = torch.rand(4, 5, dtype=torch.float64)
    mask = _mask(4, 5, [5, 2, 3, 0])
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    grpo = torch.tensor(0.7, dtype=torch.float64)
    per_rollout = [_mean(kl[b, t].item() for t in range(5) if mask[b, t]) for b in range(4)]
    loss, d = vold_loss(grpo, kl, mask, rewards, beta=0.5, distill_on="all")
    assert loss.item() == pytest.approx(0.7 + 0.5 * _mean(per_rollout))
    loss, d = vold_loss(grpo, kl, mask, rewards, beta=0.5, distill_on="failed")
    assert loss.item() == pytest.approx(0.7 + 0.5 * _mean(per_rollout[1:3]))
    assert d["n_distilled"] == 2 and d["frac_failed"] == 0.5
    # 0/1 rewards as integers or booleans work the same
    for r in (rewards.long(), rewards.bool()):
        assert vold_loss(grpo, kl, mask, r, beta=0.5, distill_on="failed")[0].item() == pytest.approx(loss.item())


def test_vold_failed_only_without_failures_is_grpo():
    kl = torch.rand(3, 4, requires_grad=True)
    grpo = torch.tensor(0.3, requires_grad=True)
    loss, d = vold_loss(grpo, kl, torch.ones(3, 4), torch.ones(3), distill_on="failed")
    assert loss.item() == pytest.approx(0.3) and not torch.isnan(loss)
    loss.backward()
    assert kl.grad.abs().sum() == 0 and grpo.grad == 1.0
    assert d["n_distilled"] == 0 and d["distill_kl"] == 0.0
    with pytest.raises(ValueError, match="all, failed"):
        vold_loss(grpo, kl, torch.ones(3, 4), torch.ones(3), distill_on="some")
    with pytest.raises(ValueError, match="rewards"):
        vold_loss(grpo, kl, torch.ones(3, 4), torch.ones(4))
