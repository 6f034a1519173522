"""Model inputs that re-run a rollout's prompts (with real, degraded or no images) plus its completions."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from vlm_opd.data.degrade import pixelate
from vlm_opd.data.example import Example
from vlm_opd.errors import DataError, ModelError
from vlm_opd.models.loading import LoadedModel
from vlm_opd.models.prompts import encode_images, encode_prompts, gather_vision, image_counts, row_image_index
from vlm_opd.rollout.types import Rollout

ImageMode = str | Callable[[Image.Image], Image.Image]
IMAGE_MODES = ("real", "degraded", "none")


@dataclass
class ScoringInputs:
    """Forward inputs for prompt + completion `[B, Lp + Tc]`, images kept once per prompt.

    Attributes:
        inputs: row tensors: input_ids, attention_mask, and for VLMs mm_token_type_ids and (when
            rows have images) the rows' `image_grid_thw [N_row_images, 3]`. Position
            `prompt_len - 1 + t` predicts completion token t.
        prompt_len: Lp of this encoding (the scorer's own prompt rendering).
        num_completion: Tc.
        pixel_values: `[N_patches, D]` patches of each distinct image once (None without images).
        image_grid_thw: `[N_images, 3]` grids of `pixel_values`' images.
        image_index: `[N_row_images]` which of those images each row image is, in row order (the K
            samples of a prompt share one image; the vision tower only needs to see it once).
        image_examples: the examples whose images `pixel_values` holds, in order (None after `stack`).
        position_ids: the rows' M-RoPE positions once computed (`vlm_opd.scoring.rope_positions`);
            they depend on tokens and image grids only, so a degraded copy shares them.
    """

    inputs: dict[str, torch.Tensor]
    prompt_len: int
    num_completion: int
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    image_index: torch.Tensor | None = None
    image_examples: list[Example] | None = None
    position_ids: torch.Tensor | None = None

    @property
    def has_images(self) -> bool:
        return self.image_index is not None and self.image_index.numel() > 0

    def model_kwargs(self) -> dict[str, torch.Tensor]:
        """Plain forward kwargs: `inputs` plus `pixel_values` repeated per row image."""
        out = dict(self.inputs)
        if self.has_images:
            idx = self.image_index.to(self.pixel_values.device)
            per_image = self.image_grid_thw.prod(-1)  # patches of each distinct image
            starts = torch.cumsum(per_image, 0) - per_image
            patch_idx = torch.cat(
                [torch.arange(int(starts[i]), int(starts[i] + per_image[i]), device=idx.device) for i in idx.tolist()]
            )
            out["pixel_values"] = self.pixel_values.index_select(0, patch_idx)
        return out

    @staticmethod
    def stack(a: ScoringInputs, b: ScoringInputs) -> ScoringInputs:
        """Rows of `a` then rows of `b` (same prompt and completion lengths), one batch."""
        if a.prompt_len != b.prompt_len or a.num_completion != b.num_completion or set(a.inputs) != set(b.inputs):
            raise DataError("ScoringInputs.stack: the two encodings differ in prompt length, completion or keys")
        inputs = {k: torch.cat([a.inputs[k], b.inputs[k]], dim=0) for k in a.inputs}
        if not (a.has_images or b.has_images):
            return ScoringInputs(inputs, a.prompt_len, a.num_completion)
        parts = [x for x in (a, b) if x.has_images]
        offset, pvs, grids, idxs = 0, [], [], []
        for x in parts:
            pvs.append(x.pixel_values)
            grids.append(x.image_grid_thw)
            idxs.append(x.image_index + offset)
            offset += x.image_grid_thw.shape[0]
        positions = None
        if a.position_ids is not None and b.position_ids is not None:
            positions = torch.cat([a.position_ids, b.position_ids], dim=-2)  # [..., B, L]: rows are dim -2
        return ScoringInputs(
            inputs, a.prompt_len, a.num_completion, torch.cat(pvs), torch.cat(grids), torch.cat(idxs),
            position_ids=positions,
        )


def _trim_left(prompt: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop leading columns that are padding in every row (selections of a batch keep its padding)."""
    real = prompt["attention_mask"].bool().any(0)
    first = int(real.long().argmax()) if bool(real.any()) else 0
    return {k: v[:, first:] for k, v in prompt.items()}


def _rows(
    prompt: dict[str, torch.Tensor],
    pixel_values: torch.Tensor | None,
    image_grid_thw: torch.Tensor | None,
    counts: torch.Tensor | None,
    index: torch.Tensor,
    rollout: Rollout,
) -> ScoringInputs:
    """Append the rollout's completions to row-level prompt tensors `[B, Lp]`.

    Args:
        prompt: row-level prompt tensors (left-padded).
        pixel_values, image_grid_thw, counts: prompt-level vision inputs of the encoded prompts.
        index: `[B]` which encoded prompt each row is.
        rollout: supplies the completions.
    """
    prompt = _trim_left(prompt)
    dev = prompt["input_ids"].device
    comp = rollout.completion_ids.to(dev)
    cmask = rollout.completion_mask.to(dev, prompt["attention_mask"].dtype)
    inputs = {
        "input_ids": torch.cat([prompt["input_ids"], comp], dim=1),
        "attention_mask": torch.cat([prompt["attention_mask"], cmask], dim=1),
    }
    if "mm_token_type_ids" in prompt:
        # Completion tokens are text: type 0.
        inputs["mm_token_type_ids"] = torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(comp)], dim=1)
    lp, tc = int(prompt["input_ids"].shape[1]), int(comp.shape[1])
    if pixel_values is None or image_grid_thw is None or counts is None:
        return ScoringInputs(inputs, lp, tc)
    image_index, _ = row_image_index(image_grid_thw, counts, index)
    if image_index.numel() == 0:
        return ScoringInputs(inputs, lp, tc)
    image_index = image_index.to(image_grid_thw.device)
    inputs["image_grid_thw"] = image_grid_thw.index_select(0, image_index).to(dev)
    return ScoringInputs(inputs, lp, tc, pixel_values.to(dev), image_grid_thw.to(dev), image_index.to(dev))


def degrade_images(
    examples: Sequence[Example], degrade: Callable[[Image.Image], Image.Image]
) -> list[list[Image.Image]]:
    """Apply `degrade` to every image of every prompt; it must keep each image's size.

    Raises:
        DataError: `degrade` returned something that is not a PIL image or changed a size (the
            image-token count would change and real/degraded scores would not align).
    """
    out: list[list[Image.Image]] = []
    name = getattr(degrade, "__name__", type(degrade).__name__)
    for ex in examples:
        imgs = []
        for i, im in enumerate(ex.images):
            d = degrade(im)
            if not isinstance(d, Image.Image):
                raise DataError(f"degradation {name!r} returned {type(d).__name__} for example {ex.id!r} image {i}")
            if d.size != im.size:
                raise DataError(
                    f"degradation {name!r} changed example {ex.id!r} image {i} from {im.size} to {d.size}; "
                    "it must keep the size so the image-token count (and token alignment) is unchanged"
                )
            imgs.append(d if d.mode == "RGB" else d.convert("RGB"))
        out.append(imgs)
    return out


def scoring_inputs(
    lm: LoadedModel,
    rollout: Rollout,
    images: ImageMode = "real",
    degrade: Callable[[Image.Image], Image.Image] | None = None,
) -> ScoringInputs:
    """Build the forward inputs to score `rollout`'s completions under `lm`.

    Args:
        lm: the scoring model (the policy itself, or a teacher with a compatible vocabulary).
        rollout: the rollout; completion ids are shared, the prompt is encoded by `lm`.
        images: "real" (the original images), "degraded" (`degrade` applied to each image, pixelate
            by default), "none" (prompt re-rendered by `lm`'s chat template without image
            placeholders), or a callable PIL -> PIL used as the degradation.
        degrade: degradation for images="degraded" (None = pixelate).

    Raises:
        DataError: a degradation changes an image size / image-token count; images for a text-only
            model.
    """
    if callable(images):
        degrade, images = images, "degraded"
    if images not in IMAGE_MODES:
        raise DataError(f"scoring: images={images!r}; expected 'real', 'degraded', 'none' or a PIL->PIL callable")
    if images != "none" and not lm.is_vision and any(ex.images for ex in rollout.examples):
        raise ModelError(
            f"scoring: model {lm.name_or_path!r} is text-only and cannot see the rollout's images; use images='none'"
        )
    with_images = images != "none" and lm.is_vision
    si = _encode(lm, rollout, with_images, reuse=images != "none")
    if images == "degraded":
        si = with_degraded_images(lm, si, degrade or pixelate)
    return si


def _encode(lm: LoadedModel, rollout: Rollout, with_images: bool, *, reuse: bool) -> ScoringInputs:
    """The rollout's rows under `lm`'s encoding.

    With `reuse` and the same encoding key, `lm` would encode the prompts exactly as the sampler
    did, so the rollout's own prompt tensors are used.
    """
    # Only the prompts the rows use (a select()-ed rollout, e.g. a PPO mini-batch, may use a few of them),
    # so the vision tower never sees an image no row needs.
    used, index = torch.unique(rollout.prompt_index.cpu(), return_inverse=True)
    examples = [rollout.examples[i] for i in used.tolist()]
    if reuse and lm.encoding_key == rollout.encoding_key:
        prompt = {"input_ids": rollout.prompt_ids, "attention_mask": rollout.prompt_mask}
        if rollout.prompt_mm_token_type_ids is not None:
            prompt["mm_token_type_ids"] = rollout.prompt_mm_token_type_ids
        prompt = {k: v.to(lm.device) for k, v in prompt.items()}
        pixel_values, grid, counts = rollout.pixel_values, rollout.image_grid_thw, rollout.image_counts
        if len(examples) < rollout.num_prompts and counts is not None:
            pixel_values, grid = gather_vision(pixel_values, grid, counts, used)
            counts = counts[used]
        si = _rows(prompt, pixel_values, grid, counts, index, rollout)
        return dataclasses.replace(si, image_examples=examples)
    enc = encode_prompts(lm, examples, with_images=with_images, system_prompt=rollout.system_prompt)
    idx = index.to(enc["input_ids"].device)
    prompt = {k: enc[k].index_select(0, idx) for k in ("input_ids", "attention_mask", "mm_token_type_ids") if k in enc}
    counts = image_counts(examples, with_images=with_images)
    si = _rows(prompt, enc.get("pixel_values"), enc.get("image_grid_thw"), counts, index, rollout)
    return dataclasses.replace(si, image_examples=examples)


def with_degraded_images(
    lm: LoadedModel, si: ScoringInputs, degrade: Callable[[Image.Image], Image.Image] = pixelate
) -> ScoringInputs:
    """`si` (real images, from `scoring_inputs`) with every image degraded by `degrade`.

    Only the images are re-processed: a degradation keeps each image's size, so the image grids,
    the image-token counts and every text token stay those of `si` (checked on the grids), and
    the real and degraded rows are token-for-token aligned.

    Raises:
        DataError: `degrade` returned a non-image or changed a size / image grid.
    """
    if not si.has_images:
        return si
    if si.image_examples is None:
        raise DataError("with_degraded_images: these inputs do not record which examples their images belong to")
    degraded = [im for imgs in degrade_images(si.image_examples, degrade) for im in imgs]
    enc = encode_images(lm, degraded)
    if not torch.equal(enc["image_grid_thw"].cpu(), si.image_grid_thw.cpu()):
        raise DataError(
            "scoring: the degraded images changed the image grids (image-token count) compared to the "
            "real-image prompt; the degradation must keep every image's size"
        )
    return dataclasses.replace(si, pixel_values=enc["pixel_values"].to(si.pixel_values.device))
