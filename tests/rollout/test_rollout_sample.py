"""sample(): shapes, masks, determinism, suppression, batch invariance, log-probs."""

from __future__ import annotations

import pytest
import torch

from vlm_opd.errors import ConfigError
from vlm_opd.models import encode_prompts, load_model
from vlm_opd.rollout import completion_mask_from_ids, sample
from vlm_opd.rollout.backends import top_p_filter

K = 4
NEW = 16


def _check_rollout(lm, r, examples, k=K):
    p = len(examples)
    b = p * k
    assert r.num_prompts == p and r.batch_size == b and r.k == k
    assert r.prompt_ids.shape[0] == b and r.prompt_mask.shape == r.prompt_ids.shape
    assert r.completion_ids.shape == r.completion_mask.shape == r.sampler_logprobs.shape == r.policy_logprobs.shape
    assert r.completion_ids.shape[1] <= NEW
    assert torch.equal(r.prompt_index, torch.arange(b) // k)
    assert r.sampler_logprobs.dtype == torch.float32 and r.policy_logprobs.dtype == torch.float32
    # prompts left-padded: last column real, padding only at the start
    assert bool(r.prompt_mask[:, -1].all()) and torch.equal(r.prompt_mask, r.prompt_mask.cummax(1).values)
    # completion mask: ones then zeros, ending at (and including) the first EOS
    m = r.completion_mask
    assert torch.equal(m, m.flip(1).cummax(1).values.flip(1))
    eos = torch.tensor(lm.eos_token_ids)
    lengths = m.sum(1)
    for row in range(b):
        n = int(lengths[row])
        ids = r.completion_ids[row]
        assert not bool(torch.isin(ids[: n - 1], eos).any())
        assert bool(r.finished[row]) == bool(torch.isin(ids[n - 1 : n], eos).all())
        assert bool((ids[n:] == lm.pad_token_id).all())
        assert bool((r.sampler_logprobs[row, n:] == 0).all()) and bool((r.policy_logprobs[row, n:] == 0).all())
    assert bool((r.sampler_logprobs[m.bool()] <= 0).all())
    assert len(r.texts) == b
    # nothing suppressed was sampled
    assert not bool(torch.isin(r.completion_ids[m.bool()], torch.tensor(lm.suppress_token_ids)).any())


def test_sample_every_family_with_multi_and_no_image_prompts(tiny_vlm, tiny_examples):
    r = sample(tiny_vlm, tiny_examples, k=K, max_new_tokens=NEW, seed=0)
    _check_rollout(tiny_vlm, r, tiny_examples)
    # the EOS paths ran: some rows finished early, some hit the cap
    assert r.finished.any() and not r.finished.all()
    assert r.image_counts.tolist() == [1, 1, 1, 2, 0]
    assert r.image_grid_thw.shape[0] == 5  # prompt-level: each image once, not K times
    pv, grid = r.vision_inputs()
    assert grid.shape[0] == 5 * K and pv.shape[0] == K * r.pixel_values.shape[0]


def test_each_image_is_encoded_once_per_prompt_and_rollouts_are_unchanged(tiny_vlm, tiny_examples, monkeypatch):
    import importlib

    sample_mod = importlib.import_module("vlm_opd.rollout.sample")  # the module, not the function

    calls = []
    hook = tiny_vlm.base.model.visual.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    try:
        once = sample(tiny_vlm, tiny_examples, k=4, max_new_tokens=12, seed=3)
        patches = sum(calls)
        calls.clear()
        monkeypatch.setattr(sample_mod, "accepts_encoder_outputs", lambda model: False)  # per-row pixels
        per_row = sample(tiny_vlm, tiny_examples, k=4, max_new_tokens=12, seed=3)
    finally:
        hook.remove()
    assert patches * 4 == sum(calls) and patches == int(once.image_grid_thw.prod(-1).sum())
    assert torch.equal(once.completion_ids, per_row.completion_ids)
    torch.testing.assert_close(once.policy_logprobs, per_row.policy_logprobs, atol=1e-5, rtol=0)


def test_sample_text_only_lm(tiny_qwen3_lm, tiny_examples):
    r = sample(tiny_qwen3_lm, [tiny_examples[-1]], k=3, max_new_tokens=NEW, seed=1)
    _check_rollout(tiny_qwen3_lm, r, [tiny_examples[-1]], k=3)
    assert r.pixel_values is None and r.prompt_mm_token_type_ids is None


def test_same_seed_same_rollout_and_global_rng_untouched(tiny_qwen25vl, tiny_examples):
    state = torch.random.get_rng_state()
    a = sample(tiny_qwen25vl, tiny_examples, k=2, max_new_tokens=NEW, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = sample(tiny_qwen25vl, tiny_examples, k=2, max_new_tokens=NEW, seed=7)
    c = sample(tiny_qwen25vl, tiny_examples, k=2, max_new_tokens=NEW, seed=8)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    assert torch.equal(a.sampler_logprobs, b.sampler_logprobs)
    assert not torch.equal(a.completion_ids, c.completion_ids)
    # K siblings differ from each other
    assert not torch.equal(a.completion_ids[0], a.completion_ids[1])


def test_seeded_rows_do_not_depend_on_the_rest_of_the_batch(tiny_qwen2vl, tiny_examples):
    full = sample(tiny_qwen2vl, tiny_examples, k=2, max_new_tokens=NEW, seed=3)
    alone = sample(tiny_qwen2vl, tiny_examples[1:2], k=2, max_new_tokens=NEW, seed=3)
    rows = full.select([2, 3]).trim()
    assert torch.equal(rows.completion_ids, alone.completion_ids)
    assert torch.allclose(rows.policy_logprobs, alone.policy_logprobs, atol=1e-4)


def test_unseeded_sampling_uses_global_rng(tiny_qwen25vl, tiny_examples):
    torch.manual_seed(11)
    a = sample(tiny_qwen25vl, tiny_examples[:2], k=2, max_new_tokens=8)
    torch.manual_seed(11)
    b = sample(tiny_qwen25vl, tiny_examples[:2], k=2, max_new_tokens=8)
    assert torch.equal(a.completion_ids, b.completion_ids)


def test_greedy_siblings_identical(tiny_qwen3vl, tiny_examples):
    r = sample(tiny_qwen3vl, tiny_examples[:2], k=3, max_new_tokens=8, greedy=True)
    v = r.view_pk(r.completion_ids)
    assert torch.equal(v[:, 0], v[:, 1]) and torch.equal(v[:, 0], v[:, 2])


def test_temperature_one_sampler_logprobs_are_policy_renormalised(tiny_qwen25vl, tiny_examples):
    r = sample(tiny_qwen25vl, tiny_examples[:3], k=2, max_new_tokens=NEW, seed=0)
    m = r.completion_mask.bool()
    # same logits, the suppressed mass removed: sampler >= policy, by the same offset per position
    diff = (r.sampler_logprobs - r.policy_logprobs)[m]
    assert bool((diff >= -1e-6).all()) and bool((diff > 0).any())
    hot = sample(tiny_qwen25vl, tiny_examples[:3], k=2, max_new_tokens=NEW, seed=0, temperature=2.0)
    assert not torch.allclose(hot.sampler_logprobs, hot.policy_logprobs)


def test_suppressed_token_never_sampled_even_if_favoured(tiny_qwen25vl_dir, tiny_examples):
    lm = load_model(tiny_qwen25vl_dir)
    with torch.no_grad():  # make <|image_pad|> by far the likeliest next token
        w = lm.lm_head_weight
        w[lm.image_token_id] = 50 * w[lm.image_token_id] / w[lm.image_token_id].norm()
    enc = encode_prompts(lm, tiny_examples[:1])
    raw = lm.model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert bool((raw[:, enc["input_ids"].shape[1]:] == lm.image_token_id).any())  # unsuppressed: sampled
    r = sample(lm, tiny_examples[:2], k=2, max_new_tokens=8, seed=0)
    assert not bool((r.completion_ids == lm.image_token_id).any())


def test_top_p_filter_keeps_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.1)).tolist() == [[True, False, False, False]]


def test_top_p_sampling_stays_in_nucleus(tiny_qwen25vl, tiny_examples):
    r = sample(tiny_qwen25vl, tiny_examples[:2], k=2, max_new_tokens=8, seed=0, top_p=0.05)
    # sampler log-probs are renormalised over a nucleus holding ~5% of the mass (plus at most one
    # token's worth): at least log(1 / 0.15) above the plain policy log-probs of the same tokens
    m = r.completion_mask.bool()
    assert bool(((r.sampler_logprobs - r.policy_logprobs)[m] > 1.9).all())


def test_completion_mask_from_ids():
    ids = torch.tensor([[5, 6, 2, 2], [5, 2, 7, 8], [5, 6, 7, 8]])
    assert completion_mask_from_ids(ids, [2]).tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=0), "k must"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(temperature=0.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
    ],
)
def test_bad_sampling_args(tiny_qwen25vl, tiny_examples, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        sample(tiny_qwen25vl, tiny_examples[:1], **kwargs)


def test_keyed_inverse_cdf_samples_the_softmax_and_never_a_masked_token():
    from vlm_opd.rollout import RowUniforms

    n = 20000
    logits = torch.tensor([[2.0, 1.0, float("-inf"), 0.0, -1.0]]).expand(n, -1)
    keyed = RowUniforms(torch.arange(n), steps=2, device=torch.device("cpu"))
    picks = keyed.pick(logits, 0).squeeze(1)
    freq = torch.bincount(picks, minlength=5).double() / n
    expected = torch.softmax(logits[0].double(), -1)
    assert freq[2] == 0
    assert bool(((freq - expected).abs() <= 4 * torch.sqrt(expected * (1 - expected) / n) + 1e-12).all())
    # a row's draw depends only on its key and step
    again = RowUniforms(torch.arange(n)[7:9], steps=2, device=torch.device("cpu"))
    assert torch.equal(again.pick(logits[:2], 0).squeeze(1), picks[7:9])
    assert not torch.equal(keyed.pick(logits, 1).squeeze(1), picks)
