"""Hidden states and log-probs of a rollout's completion tokens under any compatible model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from vlm_opd.algorithms.chunked import chunked_token_logprobs
from vlm_opd.data.degrade import pixelate
from vlm_opd.errors import DataError, ModelError
from vlm_opd.models.loading import QWEN_VL_FAMILIES, LoadedModel
from vlm_opd.models.prompts import accepts_encoder_outputs, shared_image_features
from vlm_opd.rollout.types import Rollout
from vlm_opd.scoring.inputs import ImageMode, ScoringInputs, scoring_inputs, with_degraded_images


def rope_positions(lm: LoadedModel, si: ScoringInputs) -> torch.Tensor | None:
    """M-RoPE position ids of `si`'s rows, computed by the model's own `get_rope_index` once and kept on `si`.

    Positions depend only on the tokens and image grids, so the degraded copy of a batch
    (`with_degraded_images` after this call) reuses them instead of recomputing. None for inputs
    without images or a model outside the Qwen-VL families (the model then computes positions itself).
    """
    if si.position_ids is None and si.has_images:
        # Only the Qwen-VL families' get_rope_index takes these arguments; other models place their own.
        get = getattr(lm.base.base_model, "get_rope_index", None)
        if get is None or lm.config.model_type not in QWEN_VL_FAMILIES:
            return None
        kw = si.inputs
        si.position_ids, _ = get(
            input_ids=kw["input_ids"], mm_token_type_ids=kw.get("mm_token_type_ids"),
            image_grid_thw=kw.get("image_grid_thw"), attention_mask=kw["attention_mask"],
        )
    return si.position_ids


def _is_fsdp(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _through_wrapper(model) -> bool:
    """DDP-wrapped and FSDP-sharded models are called through their own forward: DDP's gradient
    synchronisation and FSDP's gathers hook into it (calling the backbone directly would skip them)."""
    return isinstance(model, torch.nn.parallel.DistributedDataParallel) or _is_fsdp(model)


def backbone_hidden(lm: LoadedModel, si: ScoringInputs | dict[str, torch.Tensor]) -> torch.Tensor:
    """Final (normed) hidden states `[B, L, H]`, without `[B, L, V]` logits.

    Normally runs the decoder backbone (`model.model`) directly, so neither logits nor per-layer
    hidden states are kept, and runs the vision tower once per distinct image (the K samples of a
    prompt share its image features, gradients included). A DDP-wrapped model is instead called
    through its wrapper, so gradient synchronisation sees the whole forward (and an FSDP-sharded
    model through its root, whose hooks gather the shards), with
    `logits_to_keep=1` and the final state read from `hidden_states[-1]` (which transformers ties
    to the normed final state); images are then encoded per row.

    When no image is in the batch, positions are counted from the attention mask, exactly as
    `generate` does for left-padded rows (with images, the model's M-RoPE index does the same).

    Args:
        lm: the model.
        si: `ScoringInputs`, or plain forward kwargs (input_ids, attention_mask, ...).
    """
    if isinstance(si, dict):
        kwargs, shared = dict(si), None
    else:
        kwargs, shared = si.inputs, si
    kwargs = dict(kwargs)
    if "pixel_values" not in kwargs and (shared is None or not shared.has_images):
        mask = kwargs["attention_mask"].long()
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)
    elif shared is not None and rope_positions(lm, shared) is not None:
        kwargs["position_ids"] = shared.position_ids
    if _through_wrapper(lm.model):
        if shared is not None:
            kwargs = {**shared.model_kwargs(), **kwargs}
        out = lm.model(**kwargs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
        return out.hidden_states[-1]
    model = lm.base
    backbone = model.base_model
    if backbone is model:
        raise ModelError(f"model {lm.name_or_path!r} ({type(model).__name__}) exposes no decoder backbone")
    if shared is not None and shared.has_images:
        if accepts_encoder_outputs(backbone):
            feats = shared_image_features(model, shared.pixel_values, shared.image_grid_thw, shared.image_index)
            kwargs["mm_encoder_outputs"] = {"image": feats}
        else:  # older transformers: let the model encode each row's images
            kwargs = {**shared.model_kwargs(), **kwargs}
    return backbone(**kwargs, use_cache=False).last_hidden_state


def _completion_slice(hidden: torch.Tensor, si: ScoringInputs) -> torch.Tensor:
    # Prompts are left-padded, so every row's last prompt token is column prompt_len - 1; it and the
    # next Tc - 1 positions predict the Tc completion tokens.
    start = si.prompt_len - 1
    return hidden[:, start : start + si.num_completion]


def _head(lm: LoadedModel) -> torch.Tensor:
    """The lm_head weight, detached; read after the model's forward (an FSDP-sharded model holds the
    whole weight only from its forward on)."""
    return lm.lm_head_weight.detach()


def _check_lm_head(lm: LoadedModel) -> None:
    head = lm.base.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ModelError(
            f"model {lm.name_or_path!r} has an lm_head bias; chunked scoring from hidden states assumes none"
        )


def completion_hidden(
    lm: LoadedModel,
    rollout: Rollout,
    images: ImageMode = "real",
    degrade: Callable[[Image.Image], Image.Image] | None = None,
) -> torch.Tensor:
    """Final hidden states at the positions that predict each completion token, `[B, Tc, H]`.

    Runs with gradients when grad is enabled and the model has trainable parameters (the student's
    training forward); wrap in `torch.no_grad()` for teachers. Rows past a completion's end hold
    values for padding and must be masked with `rollout.completion_mask`.

    Args:
        lm: scoring model.
        rollout: completions to score.
        images: "real", "degraded", "none", or a PIL -> PIL degradation (see `scoring_inputs`).
        degrade: degradation for images="degraded" (None = pixelate).
    """
    si = scoring_inputs(lm, rollout, images, degrade)
    return _completion_slice(backbone_hidden(lm, si), si)


def logprobs_from_hidden(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Masked token log-probs from hidden states.

    Args:
        hidden: `[B, T, H]`.
        weight: `[V, H]` lm_head weight.
        token_ids: `[B, T]`.
        mask: `[B, T]`; positions with 0 get log-prob 0.
        temperature: logits divided by it.
        chunk_size: rows per chunk of the `[chunk, V]` logits.

    Returns:
        `[B, T]` float32.
    """
    b, t, h = hidden.shape
    if token_ids.shape != (b, t) or mask.shape != (b, t):
        raise ValueError(
            f"logprobs_from_hidden: hidden {tuple(hidden.shape)}, token_ids {tuple(token_ids.shape)} and "
            f"mask {tuple(mask.shape)} disagree on [B, T]"
        )
    valid = mask.reshape(-1).bool()
    flat_ids = token_ids.reshape(-1).to(hidden.device)
    if valid.any() and int(flat_ids[valid].max()) >= weight.shape[0]:
        raise DataError(
            f"token id {int(flat_ids[valid].max())} is outside the scoring model's vocabulary of {weight.shape[0]} rows"
        )
    out = torch.zeros(b * t, dtype=torch.float32, device=hidden.device)
    rows = valid.nonzero(as_tuple=True)[0]
    if rows.numel():
        lp = chunked_token_logprobs(
            hidden.reshape(-1, h).index_select(0, rows), weight, flat_ids.index_select(0, rows),
            temperature=temperature, chunk_size=chunk_size,
        )
        out = out.index_put((rows,), lp)
    return out.reshape(b, t)


def token_logprobs(
    lm: LoadedModel,
    rollout: Rollout,
    images: ImageMode = "real",
    degrade: Callable[[Image.Image], Image.Image] | None = pixelate,
    temperature: float = 1.0,
    *,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Log-probs `[B, Tc]` (float32, 0 at masked positions) of the rollout's completion tokens under `lm`.

    Computed from hidden states in row chunks, so `[B, Tc, V]` logits never exist. With grad enabled
    and a trainable model the result carries gradients.

    Args:
        lm: scoring model (the policy, or a teacher sharing the vocabulary).
        rollout: completions to score.
        images: "real", "degraded" (pixelate by default), "none" (text-only prompt rendered by
            `lm`'s chat template), or a PIL -> PIL degradation.
        degrade: degradation for images="degraded" (None also means pixelate).
        temperature: logits are divided by it (1.0 = the plain policy).
        chunk_size: rows per logits chunk.
    """
    _check_lm_head(lm)
    hidden = completion_hidden(lm, rollout, images, degrade)
    return logprobs_from_hidden(
        hidden, lm.lm_head_weight, rollout.completion_ids, rollout.completion_mask,
        temperature=temperature, chunk_size=chunk_size,
    )


@dataclass
class TeacherSignals:
    """Everything OPD-style losses need from the teacher for one rollout (no logits kept).

    Attributes:
        logprobs_real: `[B, T]` float32 teacher log-probs of the completion tokens with the real
            image (with no image for a text-only teacher). 0 at masked positions.
        logprobs_degraded: `[B, T]` same with degraded images; None for a text-only teacher or when
            `degrade=None`. Equals `logprobs_real` for prompts without images.
        hidden_real: `[B, T, H_t]` teacher final hidden states (real image) for full-vocabulary
            divergences; None unless `need_hidden`.
        lm_head_weight: `[V_t, H_t]` teacher output projection (pairs with `hidden_real`).
        hidden_degraded: `[B, T, H_t]` the same hidden states with degraded images (VA of kind
            teacher_shift); None unless `need_hidden_degraded` and a degraded pass ran.
    """

    logprobs_real: torch.Tensor
    logprobs_degraded: torch.Tensor | None
    hidden_real: torch.Tensor | None
    lm_head_weight: torch.Tensor
    hidden_degraded: torch.Tensor | None = None

    @property
    def visual_advantage(self) -> torch.Tensor | None:
        """`[B, T]` log p_T(y | real image) - log p_T(y | degraded image), or None without a degraded pass."""
        if self.logprobs_degraded is None:
            return None
        return self.logprobs_real - self.logprobs_degraded


def teacher_signals(
    teacher: LoadedModel,
    rollout: Rollout,
    degrade: Callable[[Image.Image], Image.Image] | None = pixelate,
    need_hidden: bool = True,
    batch_real_and_degraded: bool = True,
    *,
    chunk_size: int = 1024,
    need_hidden_degraded: bool = False,
) -> TeacherSignals:
    """Teacher log-probs under the real and degraded image (and hidden states) in one call, no grad.

    The real and degraded passes run as one batch of 2B rows when `batch_real_and_degraded` (their
    prompts are token-for-token identical because degradations keep image sizes), else as two.

    Args:
        teacher: the teacher; a text-only LM is scored on the prompt without images (VOLD).
        rollout: the student's rollout.
        degrade: PIL -> PIL degradation for the counterfactual pass (pixelate by default); None
            skips the degraded pass (plain OPD, VOLD, KD).
        need_hidden: keep the real-image hidden states for full-vocabulary divergences.
        batch_real_and_degraded: one forward of 2B rows instead of two of B.
        chunk_size: rows per logits chunk.
        need_hidden_degraded: also keep the degraded-image hidden states (for `teacher_shift_va`).
    """
    _check_lm_head(teacher)
    ids, mask = rollout.completion_ids, rollout.completion_mask
    has_images = any(ex.images for ex in rollout.examples)
    with torch.no_grad():
        if not teacher.is_vision:
            si = scoring_inputs(teacher, rollout, "none")
            hidden = _completion_slice(backbone_hidden(teacher, si), si)
            lp = logprobs_from_hidden(hidden, weight := _head(teacher), ids, mask, chunk_size=chunk_size)
            return TeacherSignals(lp, None, hidden if need_hidden else None, weight)

        real = scoring_inputs(teacher, rollout, "real")
        rope_positions(teacher, real)  # once: the degraded copy below shares them
        # An FSDP-sharded teacher's forwards are collectives: every process must run as many, whether or not
        # its own rollouts have images, so it takes the degraded pass (here equal to the real one) anyway.
        if degrade is None or (not has_images and not _is_fsdp(teacher.model)):
            hidden = _completion_slice(backbone_hidden(teacher, real), real)
            lp = logprobs_from_hidden(hidden, weight := _head(teacher), ids, mask, chunk_size=chunk_size)
            # Without any image the degraded prompt is the real one: same scores, VA = 0.
            lp_deg = None if degrade is None else lp.clone()
            hidden_deg = hidden if need_hidden_degraded and degrade is not None else None
            return TeacherSignals(lp, lp_deg, hidden if need_hidden else None, weight, hidden_deg)

        deg = with_degraded_images(teacher, real, degrade)  # same text tokens, degraded pixels
        if batch_real_and_degraded:
            hidden_both = _completion_slice(backbone_hidden(teacher, ScoringInputs.stack(real, deg)), real)
            b = ids.shape[0]
            hidden, hidden_deg = hidden_both[:b], hidden_both[b:]
        else:
            hidden = _completion_slice(backbone_hidden(teacher, real), real)
            hidden_deg = _completion_slice(backbone_hidden(teacher, deg), deg)
        lp = logprobs_from_hidden(hidden, weight := _head(teacher), ids, mask, chunk_size=chunk_size)
        lp_deg = logprobs_from_hidden(hidden_deg, weight, ids, mask, chunk_size=chunk_size)
        return TeacherSignals(lp, lp_deg, hidden if need_hidden else None, weight,
                              hidden_deg if need_hidden_degraded else None)
