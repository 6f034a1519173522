"""Turn `Example`s into chat messages and left-padded model inputs.

Image placement follows the dataset convention: each `<image>` marker in `Example.problem` is where
one image goes; a problem without markers gets its images before the text.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from vlm_opd.data.example import IMAGE_PLACEHOLDER, Example
from vlm_opd.errors import DataError
from vlm_opd.models.loading import LoadedModel


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as RGB, with a DataError naming the file if it is missing or not an image."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image file {str(p)!r} does not exist")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"image file {str(p)!r} is not a readable image: {e}") from e


def _check_images(example: Example, images: Sequence[Any]) -> None:
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image):
            raise DataError(
                f"example {example.id!r}: image {i} is a {type(im).__name__}; expected a PIL image "
                "(open files with vlm_opd.models.open_image)"
            )


def build_messages(
    example: Example,
    with_images: bool = True,
    system_prompt: str | None = None,
    images: Sequence[Image.Image] | None = None,
) -> list[dict[str, Any]]:
    """Chat messages for one example.

    Args:
        example: the prompt.
        with_images: place `{"type": "image"}` entries at the `<image>` markers (or before the text
            when there are none). False renders the problem text alone with the markers dropped
            (text-only teachers).
        system_prompt: optional system message.
        images: images to count against the markers instead of `example.images`.

    Returns:
        `[{"role": "system", ...}?, {"role": "user", "content": ...}]`; the user content is a list of
        `{"type": "image"}` / `{"type": "text", "text": ...}` parts, or a plain string when
        `with_images=False`.

    Raises:
        DataError: the problem has N markers but M != N images (N > 0).
    """
    imgs = list(example.images if images is None else images)
    segments = example.problem.split(IMAGE_PLACEHOLDER)
    n_markers = len(segments) - 1
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    if not with_images:
        # Drop the markers; collapse the whitespace they leave behind at the ends.
        text = "".join(segments).strip()
        messages.append({"role": "user", "content": text})
        return messages
    if n_markers and n_markers != len(imgs):
        raise DataError(
            f"example {example.id!r}: problem has {n_markers} {IMAGE_PLACEHOLDER} marker(s) but "
            f"{len(imgs)} image(s); expected one image per marker"
        )
    content: list[dict[str, Any]] = []
    if n_markers == 0:
        content.extend({"type": "image"} for _ in imgs)
        if example.problem:
            content.append({"type": "text", "text": example.problem})
    else:
        for i, seg in enumerate(segments):
            if seg:
                content.append({"type": "text", "text": seg})
            if i < n_markers:
                content.append({"type": "image"})
    messages.append({"role": "user", "content": content})
    return messages


def render_prompt(lm: LoadedModel, messages: list[dict[str, Any]]) -> str:
    """Render messages with the model's chat template, ending with the assistant turn opener."""
    renderer = lm.processor if lm.processor is not None else lm.tokenizer
    if getattr(renderer, "chat_template", None) is None and getattr(lm.tokenizer, "chat_template", None) is None:
        raise DataError(f"model {lm.name_or_path!r} has no chat template; cannot render prompts")
    if lm.processor is None and not isinstance(messages[-1]["content"], str):
        # Text-only chat templates expect string content.
        messages = [
            {**m, "content": "".join(p.get("text", "") for p in m["content"])} if not isinstance(m["content"], str) else m
            for m in messages
        ]
    return renderer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **lm.chat_template_kwargs
    )


def encode_prompts(
    lm: LoadedModel,
    examples: Sequence[Example],
    with_images: bool = True,
    images_override: Sequence[Sequence[Image.Image]] | None = None,
    system_prompt: str | None = None,
) -> dict[str, torch.Tensor]:
    """Encode a batch of prompts for `lm`, left-padded.

    Args:
        lm: the model whose tokenizer, chat template and image processor to use.
        examples: P prompts.
        with_images: False renders the prompts as text only (no image placeholders, no pixels).
        images_override: per example, images to use instead of `example.images` (e.g. degraded).
        system_prompt: optional system message for every prompt.

    Returns:
        dict with `input_ids [P, Lp]`, `attention_mask [P, Lp]`, and for a VLM `mm_token_type_ids
        [P, Lp]` (1 at image tokens) plus, when any prompt has an image, `pixel_values [N_patches, D]`
        and `image_grid_thw [N_images, 3]` (images in example order). Tensors are on `lm.device`.

    Raises:
        DataError: marker/image count mismatch, a non-PIL image, or images for a text-only model.
    """
    if len(examples) == 0:
        raise DataError("encode_prompts: got no examples")
    if images_override is not None and len(images_override) != len(examples):
        raise DataError(
            f"encode_prompts: images_override has {len(images_override)} entries for {len(examples)} examples"
        )
    texts: list[str] = []
    flat_images: list[Image.Image] = []
    for i, ex in enumerate(examples):
        imgs = list(ex.images if images_override is None else images_override[i])
        if with_images and not lm.is_vision and (imgs or IMAGE_PLACEHOLDER in ex.problem):
            raise DataError(
                f"example {ex.id!r} has {len(imgs)} image(s) but model {lm.name_or_path!r} is text-only; "
                "encode it with with_images=False (score with images='none')"
            )
        if with_images:
            _check_images(ex, imgs)
        messages = build_messages(ex, with_images=with_images, system_prompt=system_prompt, images=imgs)
        text = render_prompt(lm, messages)
        if with_images and lm.is_vision:
            image_token = getattr(lm.processor, "image_token", None)
            if image_token is not None and text.count(image_token) != len(imgs):
                raise DataError(
                    f"example {ex.id!r}: the chat template of {lm.name_or_path!r} rendered "
                    f"{text.count(image_token)} image placeholder(s) for {len(imgs)} image(s)"
                )
            flat_images.extend(imgs)
        texts.append(text)

    device = lm.device
    if lm.is_vision:
        call: dict[str, Any] = dict(text=texts, return_tensors="pt", padding=True, padding_side="left")
        if flat_images:
            call["images"] = [im if im.mode == "RGB" else im.convert("RGB") for im in flat_images]
        enc = lm.processor(**call)
        out = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}
        if "mm_token_type_ids" not in out:
            out["mm_token_type_ids"] = torch.zeros_like(out["input_ids"])
        out.pop("token_type_ids", None)
    else:
        enc = lm.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        out = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    return {k: v.to(device) for k, v in out.items()}


def encode_images(lm: LoadedModel, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
    """Run only `lm`'s image processor: `pixel_values [N_patches, D]` and `image_grid_thw [N_images, 3]`.

    The same tensors `encode_prompts` produces for these images, without re-rendering and
    re-tokenizing the text; used to swap the images of an already-encoded batch (the degraded
    copies of VA-OPD and PAPO keep every image's size, so the text tokens are unchanged).

    Raises:
        DataError: `lm` has no image processor, or it returned no `pixel_values` / `image_grid_thw`.
    """
    processor = getattr(lm.processor, "image_processor", None)
    if processor is None:
        raise DataError(f"model {lm.name_or_path!r} has no image processor to encode images with")
    out = processor(images=[im if im.mode == "RGB" else im.convert("RGB") for im in images], return_tensors="pt")
    missing = [k for k in ("pixel_values", "image_grid_thw") if not isinstance(out.get(k), torch.Tensor)]
    if missing:
        raise DataError(
            f"the image processor of {lm.name_or_path!r} ({type(processor).__name__}) returned no {', '.join(missing)}"
        )
    return {k: out[k].to(lm.device) for k in ("pixel_values", "image_grid_thw")}


def image_counts(examples: Sequence[Example], with_images: bool = True) -> torch.Tensor:
    """Number of images each prompt contributes to `pixel_values` `[P]` (0 when text-only)."""
    return torch.tensor([len(ex.images) if with_images else 0 for ex in examples], dtype=torch.long)


def patch_counts(image_grid_thw: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Patches each prompt contributes to `pixel_values` `[P]`.

    Args:
        image_grid_thw: `[N_images, 3]` grids of all images, prompts in order.
        counts: `[P]` images per prompt (sums to N_images).
    """
    per_image = image_grid_thw.prod(dim=-1).to("cpu")  # [N_images]
    owner = torch.repeat_interleave(torch.arange(len(counts)), counts.to("cpu"))  # [N_images]
    return torch.zeros(len(counts), dtype=torch.long).index_add_(0, owner, per_image)


def row_image_index(
    image_grid_thw: torch.Tensor, counts: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which prompt-level images and patches rows use, in row order.

    Args:
        image_grid_thw: `[N_images, 3]` grids of the P prompts' images, prompt order.
        counts: `[P]` images per prompt.
        index: `[B]` prompt of each row.

    Returns:
        (`image_index [N_row_images]`, `patch_index [N_row_patches]`) long CPU tensors.
    """
    counts = counts.to("cpu")
    index = index.to("cpu")
    n_patch = patch_counts(image_grid_thw, counts)  # [P]
    patch_start = torch.cumsum(n_patch, 0) - n_patch
    img_start = torch.cumsum(counts, 0) - counts
    rows = index.tolist()
    empty = torch.zeros(0, dtype=torch.long)
    img_idx = torch.cat([empty] + [torch.arange(int(img_start[p]), int(img_start[p] + counts[p])) for p in rows])
    patch_idx = torch.cat(
        [empty] + [torch.arange(int(patch_start[p]), int(patch_start[p] + n_patch[p])) for p in rows]
    )
    return img_idx, patch_idx


def gather_vision(
    pixel_values: torch.Tensor | None,
    image_grid_thw: torch.Tensor | None,
    counts: torch.Tensor,
    index: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Vision inputs for rows that repeat/select prompts.

    `pixel_values` concatenates the patches of every image of every prompt, so picking prompts for
    rows means picking contiguous patch ranges, in row order.

    Args:
        pixel_values: `[N_patches, D]` for P prompts (None when no prompt has an image).
        image_grid_thw: `[N_images, 3]`.
        counts: `[P]` images per prompt.
        index: `[B]` prompt index of each output row.

    Returns:
        (`pixel_values [N'_patches, D]`, `image_grid_thw [N'_images, 3]`) for the B rows, or
        (None, None) when the selected rows have no image.
    """
    if pixel_values is None or image_grid_thw is None:
        return None, None
    img_idx, patch_idx = row_image_index(image_grid_thw, counts, index)
    if img_idx.numel() == 0:
        return None, None
    dev = pixel_values.device
    return pixel_values.index_select(0, patch_idx.to(dev)), image_grid_thw.index_select(0, img_idx.to(dev))


def accepts_encoder_outputs(module) -> bool:
    """Whether `module.forward` takes pre-computed `mm_encoder_outputs` (transformers 5.x VLMs)."""
    return "mm_encoder_outputs" in inspect.signature(module.forward).parameters


def shared_image_features(model, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor, image_index: torch.Tensor):
    """Vision-tower outputs of each distinct image once, re-indexed to the rows' images.

    Args:
        model: the VLM (`get_image_features`).
        pixel_values, image_grid_thw: patches and grids of the distinct images.
        image_index: `[N_row_images]` which distinct image each row image is, in row order (the K
            samples of a prompt share one image, so the vision tower sees it once; gradients, when
            enabled, flow back to it from every row).

    Returns:
        the model's image-feature output with `pooler_output` (and Qwen3-VL's per-layer
        `deepstack_features`) in row-image order, as `mm_encoder_outputs["image"]` expects.
    """
    feats = model.get_image_features(pixel_values, image_grid_thw, return_dict=True)
    idx = image_index.tolist()
    feats.pooler_output = tuple(feats.pooler_output[i] for i in idx)
    deepstack = getattr(feats, "deepstack_features", None)  # Qwen3-VL: per layer, per image
    if deepstack is not None:
        feats.deepstack_features = [tuple(layer[i] for i in idx) for layer in deepstack]
    return feats
