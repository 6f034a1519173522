"""`sample`: K completions per prompt as one `Rollout`."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch

from vlm_opd.data.example import Example
from vlm_opd.errors import ConfigError
from vlm_opd.models.loading import LoadedModel
from vlm_opd.models.prompts import (
    accepts_encoder_outputs,
    encode_prompts,
    gather_vision,
    image_counts,
    row_image_index,
    shared_image_features,
)
from vlm_opd.rollout.backends import HFGenerateBackend, SamplerBackend
from vlm_opd.rollout.types import Rollout


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_token_ids: Sequence[int]) -> torch.Tensor:
    """`[B, T]` long mask: 1 up to and including the first EOS of each row, 0 after.

    Args:
        completion_ids: `[B, T]`.
        eos_token_ids: ids that end a completion.
    """
    eos = torch.tensor(list(eos_token_ids), dtype=completion_ids.dtype, device=completion_ids.device)
    is_eos = torch.isin(completion_ids, eos).long()  # [B, T]
    eos_before = torch.cumsum(is_eos, dim=1) - is_eos  # EOS strictly before each position
    return (eos_before == 0).long()


def expand_prompts(enc: dict[str, torch.Tensor], counts: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Row inputs `[B, ...]` from prompt inputs `[P, ...]`: row b is prompt `index[b]`.

    Args:
        enc: output of `encode_prompts` for P prompts.
        counts: `[P]` images per prompt.
        index: `[B]` prompt of each row.
    """
    dev = enc["input_ids"].device
    idx = index.to(dev)
    out = {k: enc[k].index_select(0, idx) for k in ("input_ids", "attention_mask", "mm_token_type_ids") if k in enc}
    pv, grid = gather_vision(enc.get("pixel_values"), enc.get("image_grid_thw"), counts, index)
    if pv is not None:
        out["pixel_values"], out["image_grid_thw"] = pv, grid
    return out


def _encode_images_once(
    lm: LoadedModel, enc: dict[str, torch.Tensor], counts: torch.Tensor, index: torch.Tensor, rows: dict
) -> dict:
    """`rows` with the vision tower's features of each distinct image, computed once, instead of pixels.

    The K rows of a prompt repeat its image; `generate` would encode it K times in the prefill.
    transformers' `generate` takes pre-computed `mm_encoder_outputs` (M-RoPE positions still come
    from `image_grid_thw`). Models without that argument get the plain rows.
    """
    model = lm.base
    if "pixel_values" not in rows or not accepts_encoder_outputs(model):
        return rows
    image_index, _ = row_image_index(enc["image_grid_thw"], counts, index)
    was_training = model.training
    model.eval()  # as the sampler generates (no dropout)
    try:
        with torch.no_grad():
            feats = shared_image_features(model, enc["pixel_values"], enc["image_grid_thw"], image_index)
    finally:
        model.train(was_training)
    out = {k: v for k, v in rows.items() if k != "pixel_values"}
    out["mm_encoder_outputs"] = {"image": feats}
    return out


def _row_images(examples: Sequence[Example], index: torch.Tensor) -> list[list]:
    """Row b's images (RGB, as `encode_prompts` hands them to the processor)."""
    per_prompt = [[im if im.mode == "RGB" else im.convert("RGB") for im in ex.images] for ex in examples]
    return [per_prompt[p] for p in index.tolist()]


def row_keys(seed: int, examples: Sequence[Example], k: int) -> torch.Tensor:
    """`[P * k]` int64 sampling keys: a pure function of (seed, example id, problem text, sample index).

    Keys do not depend on batch position, so an example sampled alone, in another batch, or on
    another process gets the same completions for the same seed (up to float noise in its logits).
    Two examples with equal id and problem share keys.
    """
    keys = []
    for ex in examples:
        for j in range(k):
            digest = hashlib.blake2b(f"{seed}\x00{ex.id}\x00{ex.problem}\x00{j}".encode(), digest_size=8).digest()
            keys.append(int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.tensor(keys, dtype=torch.long)


def _check_args(k, max_new_tokens, temperature, top_p, greedy) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"sample: k must be a positive integer, got {k!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"sample: max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not greedy and not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"sample: temperature must be > 0 (use greedy=True for argmax), got {temperature!r}")
    if not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise ConfigError(f"sample: top_p must be in (0, 1], got {top_p!r}")


def sample(
    lm: LoadedModel,
    examples: Sequence[Example],
    k: int = 4,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    greedy: bool = False,
    *,
    system_prompt: str | None = None,
    backend: SamplerBackend | None = None,
    score_policy: bool = True,
) -> Rollout:
    """Sample `k` completions for each example (batched; K siblings of a prompt are contiguous).

    Vision special tokens and embedding rows past the tokenizer are suppressed while sampling.

    With a `seed`, every row samples with its own key (see `row_keys`): the rollouts are
    reproducible (same seed, model and example -> same tokens) whatever else is in the batch or
    on other processes, and the global RNG is not touched. With `seed=None`, `generate`'s usual
    sampling from the global torch RNG is used.

    Args:
        lm: the policy (VLM, or text-only LM for text prompts).
        examples: P prompts; images at their `<image>` markers (or before the text).
        k: completions per prompt (B = P * k rows).
        max_new_tokens: completion length cap; rows without EOS by then are `finished=False`.
        temperature: sampling temperature (> 0).
        top_p: nucleus sampling mass in (0, 1].
        seed: seed of the per-row sampling keys (reproducible, batch-invariant rollouts).
        greedy: argmax decoding (temperature/top_p ignored; all K siblings identical).
        system_prompt: optional system message.
        backend: sampling backend; `HFGenerateBackend()` by default.
        score_policy: when the backend cannot report `policy_logprobs` (vLLM), re-score them with
            `lm`; False leaves them None (callers that only read the texts, e.g. evaluation).

    Returns:
        `Rollout` with `sampler_logprobs` (the sampling distribution) and `policy_logprobs` (plain
        T=1 log-probs, equal to `scoring.token_logprobs(lm, rollout)` up to float error).
    """
    _check_args(k, max_new_tokens, temperature, top_p, greedy)
    examples = list(examples)
    backend = backend or HFGenerateBackend()
    enc = encode_prompts(lm, examples, with_images=lm.is_vision, system_prompt=system_prompt)
    counts = image_counts(examples, with_images=lm.is_vision)
    index = torch.arange(len(examples)).repeat_interleave(k)  # [B]
    rows = expand_prompts(enc, counts, index)
    gen_inputs = _encode_images_once(lm, enc, counts, index, rows) if isinstance(backend, HFGenerateBackend) else rows

    out = backend.generate(
        lm,
        gen_inputs,
        max_new_tokens=max_new_tokens,
        temperature=float(temperature),
        top_p=float(top_p),
        greedy=greedy,
        row_keys=None if seed is None else row_keys(seed, examples, k),
        suppress_token_ids=lm.suppress_token_ids,
        eos_token_ids=lm.eos_token_ids,
        pad_token_id=lm.pad_token_id,
        row_images=_row_images(examples, index) if lm.is_vision else None,
    )
    completion_ids = out.completion_ids
    mask = completion_mask_from_ids(completion_ids, lm.eos_token_ids)  # [B, T]
    # The first EOS is inside the mask, so a row finished iff it holds an EOS at all.
    eos = torch.tensor(lm.eos_token_ids, dtype=completion_ids.dtype, device=completion_ids.device)
    finished = torch.isin(completion_ids, eos).any(dim=1)  # [B]
    # Columns past every row's end carry nothing.
    t_max = int(mask.sum(1).max())
    completion_ids = torch.where(mask.bool(), completion_ids, torch.full_like(completion_ids, lm.pad_token_id))
    zero = torch.zeros((), dtype=torch.float32, device=completion_ids.device)
    sampler_lp = torch.where(mask.bool(), out.sampler_logprobs.float(), zero)
    policy_lp = None if out.policy_logprobs is None else torch.where(mask.bool(), out.policy_logprobs.float(), zero)
    lengths = mask.sum(1).tolist()
    texts = lm.tokenizer.batch_decode(
        [row[:n] for row, n in zip(completion_ids.tolist(), lengths)], skip_special_tokens=True
    )
    rollout = Rollout(
        prompt_ids=rows["input_ids"],
        prompt_mask=rows["attention_mask"],
        completion_ids=completion_ids[:, :t_max],
        completion_mask=mask[:, :t_max],
        sampler_logprobs=sampler_lp[:, :t_max],
        policy_logprobs=policy_lp[:, :t_max] if policy_lp is not None else None,
        prompt_index=index.to(completion_ids.device),
        finished=finished,
        k=k,
        examples=examples,
        texts=texts,
        prompt_mm_token_type_ids=rows.get("mm_token_type_ids"),
        pixel_values=enc.get("pixel_values"),
        image_grid_thw=enc.get("image_grid_thw"),
        image_counts=counts.to(completion_ids.device) if lm.is_vision else None,
        encoding_key=lm.encoding_key,
        temperature=float(temperature),
        top_p=float(top_p),
        system_prompt=system_prompt,
        meta={"greedy": greedy, "seed": seed, "max_new_tokens": max_new_tokens},
    )
    if rollout.policy_logprobs is None and score_policy:  # the backend could not report them: re-score
        from vlm_opd.scoring import token_logprobs

        with torch.no_grad():
            rollout.policy_logprobs = token_logprobs(lm, rollout, images="real")
    return rollout


def rollout_from_texts(
    lm: LoadedModel,
    examples: Sequence[Example],
    texts: Sequence[str],
    max_new_tokens: int | None = None,
    *,
    system_prompt: str | None = None,
) -> Rollout:
    """A `Rollout` whose completions are given texts (SFT targets, teacher traces), k = 1.

    Each text is tokenized on its own (as the model would generate it after the prompt's assistant
    opener) and followed by the EOS token; a completion longer than `max_new_tokens` is cut and
    counts as unfinished. Log-prob fields are None (nothing was sampled).

    Args:
        lm: the model whose tokenizer, chat template and processor encode the rows.
        examples: P prompts.
        texts: P completion texts, one per example.
        max_new_tokens: completion length cap (EOS included); None = no cap.
        system_prompt: optional system message.
    """
    from vlm_opd.errors import DataError

    examples = list(examples)
    texts = list(texts)
    if len(texts) != len(examples):
        raise DataError(f"rollout_from_texts: {len(texts)} texts for {len(examples)} examples")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ConfigError(f"rollout_from_texts: max_new_tokens must be >= 1, got {max_new_tokens}")
    enc = encode_prompts(lm, examples, with_images=lm.is_vision, system_prompt=system_prompt)
    counts = image_counts(examples, with_images=lm.is_vision)
    index = torch.arange(len(examples))
    rows = expand_prompts(enc, counts, index)
    eos = lm.tokenizer.eos_token_id if lm.tokenizer.eos_token_id is not None else lm.eos_token_ids[0]
    seqs = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DataError(f"rollout_from_texts: text {i} (example {examples[i].id!r}) is {type(t).__name__}, not str")
        ids = lm.tokenizer(t, add_special_tokens=False)["input_ids"] + [eos]
        seqs.append(ids[:max_new_tokens] if max_new_tokens is not None else ids)
    t_max = max(len(x) for x in seqs)
    dev = rows["input_ids"].device
    completion_ids = torch.full((len(seqs), t_max), lm.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t_max), dtype=torch.long)
    for i, ids in enumerate(seqs):
        completion_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[i, : len(ids)] = 1
    finished = torch.tensor([ids[-1] == eos for ids in seqs])
    return Rollout(
        prompt_ids=rows["input_ids"],
        prompt_mask=rows["attention_mask"],
        completion_ids=completion_ids.to(dev),
        completion_mask=mask.to(dev),
        sampler_logprobs=None,
        policy_logprobs=None,
        prompt_index=index.to(dev),
        finished=finished.to(dev),
        k=1,
        examples=examples,
        # What is actually scored (after the cap), without the EOS.
        texts=lm.tokenizer.batch_decode(seqs, skip_special_tokens=True),
        prompt_mm_token_type_ids=rows.get("mm_token_type_ids"),
        pixel_values=enc.get("pixel_values"),
        image_grid_thw=enc.get("image_grid_thw"),
        image_counts=counts.to(dev) if lm.is_vision else None,
        encoding_key=lm.encoding_key,
        system_prompt=system_prompt,
        meta={"source": "texts"},
    )
