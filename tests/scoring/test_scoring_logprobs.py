"""token_logprobs / completion_hidden: re-scoring agreement, image modes, gradients, errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vlm_opd.data.degrade import pixelate
from vlm_opd.errors import DataError, ModelError
from vlm_opd.models import load_model
from vlm_opd.rollout import sample
from vlm_opd.scoring import completion_hidden, scoring_inputs, token_logprobs


@pytest.fixture
def rollout_of(tiny_examples):
    cache = {}

    def get(lm, k=4):
        key = (id(lm), k)
        if key not in cache:
            cache[key] = sample(lm, tiny_examples, k=k, max_new_tokens=16, seed=0)
        return cache[key]

    return get


def _naive_logprobs(lm, si, rollout):
    """Reference: full logits from the model's own forward, float64 log-softmax."""
    with torch.no_grad():
        logits = lm.model(**si.model_kwargs()).logits.double()
    start = si.prompt_len - 1
    logits = logits[:, start : start + si.num_completion]
    lp = torch.log_softmax(logits, -1).gather(2, rollout.completion_ids[..., None]).squeeze(-1)
    return torch.where(rollout.completion_mask.bool(), lp, torch.zeros_like(lp))


def test_rescoring_matches_sampler_logprobs(tiny_vlm, rollout_of):
    r = rollout_of(tiny_vlm)
    with torch.no_grad():
        lp = token_logprobs(tiny_vlm, r)
    assert lp.shape == r.completion_ids.shape and lp.dtype == torch.float32
    torch.testing.assert_close(lp, r.policy_logprobs, atol=1e-4, rtol=0)
    assert bool((lp[r.completion_mask == 0] == 0).all())


def test_rescoring_matches_for_text_lm(tiny_qwen3_lm, tiny_examples):
    r = sample(tiny_qwen3_lm, tiny_examples[-1:], k=4, max_new_tokens=16, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(token_logprobs(tiny_qwen3_lm, r), r.policy_logprobs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("images", ["real", "degraded", "none"])
def test_chunked_logprobs_equal_full_logits(tiny_qwen25vl, rollout_of, images):
    r = rollout_of(tiny_qwen25vl)
    si = scoring_inputs(tiny_qwen25vl, r, images)
    with torch.no_grad():
        lp = token_logprobs(tiny_qwen25vl, r, images=images, chunk_size=7)
    torch.testing.assert_close(lp.double(), _naive_logprobs(tiny_qwen25vl, si, r), atol=1e-5, rtol=0)


def test_pixelated_prompt_keeps_image_tokens_and_changes_scores(tiny_vlm, rollout_of):
    r = rollout_of(tiny_vlm)
    real = scoring_inputs(tiny_vlm, r, "real")
    deg = scoring_inputs(tiny_vlm, r, "degraded")
    assert torch.equal(real.inputs["input_ids"], deg.inputs["input_ids"])
    assert torch.equal(real.inputs["image_grid_thw"], deg.inputs["image_grid_thw"])
    assert real.pixel_values.shape == deg.pixel_values.shape
    assert not torch.equal(real.pixel_values, deg.pixel_values)
    with torch.no_grad():
        lp_real = token_logprobs(tiny_vlm, r)
        lp_deg = token_logprobs(tiny_vlm, r, images="degraded")
    m = r.completion_mask.bool()
    with_image = m & (r.prompt_index < 4)[:, None]
    no_image = m & (r.prompt_index == 4)[:, None]
    assert (lp_real - lp_deg)[with_image].abs().max() > 1e-4
    torch.testing.assert_close(lp_real[no_image], lp_deg[no_image], atol=1e-5, rtol=0)


def test_degraded_inputs_equal_a_full_re_encoding(tiny_vlm, rollout_of):
    """Swapping in the processed degraded images equals encoding the prompts again with them."""
    from vlm_opd.models.prompts import encode_prompts, image_counts
    from vlm_opd.scoring.inputs import _rows, degrade_images

    # rows of a single-image, the two-image and the image-less prompt, out of order
    r = rollout_of(tiny_vlm).select(torch.tensor([17, 5, 13, 0, 12]))
    deg = scoring_inputs(tiny_vlm, r, "degraded")
    used, index = torch.unique(r.prompt_index, return_inverse=True)
    examples = [r.examples[i] for i in used.tolist()]
    enc = encode_prompts(tiny_vlm, examples, images_override=degrade_images(examples, pixelate))
    prompt = {k: enc[k][index] for k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    ref = _rows(prompt, enc["pixel_values"], enc["image_grid_thw"], image_counts(examples), index, r)
    got, want = deg.model_kwargs(), ref.model_kwargs()
    assert set(got) == set(want)
    # only the used prompts' images reach the vision tower (1 + 1 + 2 + 0 of the rollout's 5 images)
    assert deg.image_grid_thw.shape[0] == 4 and [e.id for e in deg.image_examples] == [e.id for e in examples]
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)


def test_no_image_mode_drops_placeholders_and_keeps_completion(tiny_qwen3vl, rollout_of):
    r = rollout_of(tiny_qwen3vl)
    si = scoring_inputs(tiny_qwen3vl, r, "none")
    assert not si.has_images and "pixel_values" not in si.model_kwargs()
    assert not bool((si.inputs["input_ids"] == tiny_qwen3vl.image_token_id).any())
    assert si.prompt_len < r.prompt_ids.shape[1]
    assert torch.equal(si.inputs["input_ids"][:, si.prompt_len :], r.completion_ids)
    with torch.no_grad():
        lp = token_logprobs(tiny_qwen3vl, r, images="none")
    assert bool(torch.isfinite(lp).all()) and bool((lp[r.completion_mask == 0] == 0).all())


def test_callable_degradation_and_size_check(tiny_qwen2vl, rollout_of):
    r = rollout_of(tiny_qwen2vl)

    def blank(im):
        return Image.new("RGB", im.size, (128, 128, 128))

    with torch.no_grad():
        lp_blank = token_logprobs(tiny_qwen2vl, r, images=blank)
        lp_pix = token_logprobs(tiny_qwen2vl, r, images="degraded", degrade=pixelate)
    assert not torch.allclose(lp_blank, lp_pix)

    def shrink(im):
        return im.resize((im.width // 2, im.height // 2))

    with pytest.raises(DataError, match=r"shrink.*square.*image 0.*\(56, 56\) to \(28, 28\)"):
        token_logprobs(tiny_qwen2vl, r, images=shrink)
    with pytest.raises(DataError, match="images="):
        token_logprobs(tiny_qwen2vl, r, images="blurry")


def test_text_only_model_cannot_see_images(tiny_qwen3_lm, rollout_of, tiny_qwen25vl):
    r = rollout_of(tiny_qwen25vl)
    with pytest.raises(ModelError, match="text-only.*images='none'"):
        token_logprobs(tiny_qwen3_lm, r, images="real")


def test_completion_hidden_shape_and_gradients(tiny_qwen25vl_dir, tiny_examples):
    lm = load_model(tiny_qwen25vl_dir)  # private copy: this test trains
    r = sample(lm, tiny_examples, k=2, max_new_tokens=8, seed=0)
    with torch.no_grad():
        h = completion_hidden(lm, r)
    assert h.shape == (*r.completion_ids.shape, lm.hidden_size) and h.grad_fn is None
    lm.model.train()
    lp = token_logprobs(lm, r)
    assert lp.requires_grad
    (lp.sum() / r.completion_mask.sum().clamp_min(1)).backward()
    named = dict(lm.model.named_parameters())
    assert named["lm_head.weight"].grad.abs().sum() > 0
    # the vision tower sees the real images, so it gets gradient too
    vision_grads = [p.grad for n, p in named.items() if ".visual." in f".{n}" and p.grad is not None]
    assert vision_grads and sum(g.abs().sum() for g in vision_grads) > 0


def test_images_encoded_once_per_prompt_match_per_row_encoding(tiny_vlm, rollout_of, monkeypatch):
    """The K samples share one vision-tower pass per image; results equal encoding every row."""
    from vlm_opd.scoring import logprobs as scoring_logprobs
    from vlm_opd.scoring.logprobs import backbone_hidden

    r = rollout_of(tiny_vlm)
    for mode in ("real", "degraded"):
        si = scoring_inputs(tiny_vlm, r, mode)
        assert si.has_images and si.image_index.numel() == 5 * 4  # 5 images x K rows
        assert si.image_grid_thw.shape[0] == 5  # each distinct image once
        calls = []
        visual = tiny_vlm.base.model.visual
        hook = visual.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
        try:
            with torch.no_grad():
                shared = backbone_hidden(tiny_vlm, si)
                monkeypatch.setattr(scoring_logprobs, "accepts_encoder_outputs", lambda backbone: False)
                per_row = backbone_hidden(tiny_vlm, si)
                monkeypatch.undo()
        finally:
            hook.remove()
        assert calls == [si.pixel_values.shape[0], 4 * si.pixel_values.shape[0]]
        torch.testing.assert_close(shared, per_row, atol=1e-5, rtol=0)
