"""Prompt length limits, checked once before training: a prompt that cannot fit is one line, not an OOM kill.

A prompt of 38k tokens makes eager attention allocate heads x 38k x 38k floats in the first rollout
(the kernel's OOM killer ends the run without a word), and a prompt beyond `max_position_embeddings`
trains on positions the model never learned. Both are caught here, before any forward pass.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from vlm_opd.data.example import Example
from vlm_opd.errors import ConfigError, DataError


def model_context(lm) -> int | None:
    """`max_position_embeddings` of a loaded model's text config (None when the config has none)."""
    config = getattr(lm.base if hasattr(lm, "base") else lm.model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text, "max_position_embeddings", None) or getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def _image_tokens(lm, image) -> int | None:
    """Tokens one image expands to in the prompt (Qwen-VL: patches / merge^2), without processing pixels."""
    ip = getattr(lm.processor, "image_processor", None)
    if ip is None or not hasattr(ip, "get_number_of_image_patches"):
        return None
    merge = int(getattr(ip, "merge_size", 1) or 1)
    return int(ip.get_number_of_image_patches(image.height, image.width, {})) // (merge * merge)


def prompt_tokens(lm, example: Example, system_prompt: str | None = None, *, upper_bound: int | None = None) -> int:
    """Token count of `example`'s prompt as `encode_prompts` builds it (text, chat template, image tokens).

    With `upper_bound`, returns early with a cheap over-estimate (UTF-8 bytes of the rendered text: a
    byte-level BPE token covers at least one byte) when that already fits under `upper_bound`.
    """
    from vlm_opd.models.prompts import build_messages, encode_prompts, render_prompt

    with_images = lm.is_vision
    text = render_prompt(lm, build_messages(example, with_images=with_images, system_prompt=system_prompt))
    extra = 0
    if with_images and example.images:
        counts = [_image_tokens(lm, im) for im in example.images]
        if any(c is None for c in counts):  # unknown processor: encode for real
            return int(encode_prompts(lm, [example], system_prompt=system_prompt)["input_ids"].shape[1])
        extra = sum(c - 1 for c in counts)  # each image's one placeholder token expands to c tokens
    if upper_bound is not None and len(text.encode("utf-8")) + extra <= upper_bound:
        return len(text.encode("utf-8")) + extra
    return len(lm.tokenizer(text, add_special_tokens=False)["input_ids"]) + extra


def _limit(cfg, models: list[Any], generated: int, gen_key: str) -> tuple[int | None, str]:
    if cfg.data.max_prompt_tokens is not None:
        return cfg.data.max_prompt_tokens, "data.max_prompt_tokens"
    contexts = [(model_context(lm), lm.name_or_path) for lm in models if lm is not None]
    contexts = [(c, name) for c, name in contexts if c is not None]
    if not contexts:
        return None, ""
    ctx, name = min(contexts)
    if ctx - generated < 1:
        raise ConfigError(f"{gen_key}={generated} leaves no room for a prompt in the {ctx}-token context of "
                          f"{name}; lower it")
    return ctx - generated, f"the {ctx}-token context of {name} minus {gen_key}={generated}"


def check_prompt_lengths(cfg, student, teacher, train: list[Example], eval_: list[Example], *,
                         skipped_log: Path | None) -> tuple[list[Example], list[Example]]:
    """Refuse (or with `data.skip_bad_rows`, drop, count and log) prompts longer than the limit.

    The limit is `data.max_prompt_tokens`, else the smallest context of student and teacher minus the
    generated length (rollout.max_new_tokens; sft.max_length for sft/kd; eval.max_new_tokens for eval).
    """
    models = [student, teacher]
    if cfg.method in ("sft", "kd"):
        gen, gen_key = cfg.sft.max_length, "sft.max_length"
    else:
        gen, gen_key = cfg.rollout.max_new_tokens, "rollout.max_new_tokens"
    out = []
    skipped: list[dict] = []
    for role, examples, generated, key in (("train", train, gen, gen_key),
                                           ("eval", eval_, cfg.eval.max_new_tokens, "eval.max_new_tokens")):
        if not examples:
            out.append(examples)
            continue
        limit, why = _limit(cfg, models, generated, key)
        if limit is None:
            out.append(examples)
            continue
        kept = []
        for ex in examples:
            n = prompt_tokens(student, ex, cfg.data.system_prompt, upper_bound=limit)
            if n <= limit:
                kept.append(ex)
                continue
            reason = f"prompt of {n} tokens exceeds the limit of {limit} ({why})"
            if not cfg.data.skip_bad_rows:
                raise DataError(f"data.{role}: example {ex.id!r}: {reason}; shorten it, set data.max_prompt_tokens, "
                                "or data.skip_bad_rows=true to skip such rows (counted)")
            skipped.append({"source": f"data.{role}", "row": None, "location": ex.id, "reason": reason})
        if not kept:
            raise DataError(f"data.{role}: no prompt fits the limit of {limit} tokens ({why}); "
                            f"{len(examples)} skipped")
        out.append(kept)
    if skipped:
        print(f"skipped {len(skipped)} prompt(s) longer than the limit (first: {skipped[0]['location']}: "
              f"{skipped[0]['reason']})" + (f"; logged to {skipped_log}" if skipped_log else ""), file=sys.stderr)
        if skipped_log is not None:
            with open(skipped_log, "a", encoding="utf-8") as fh:
                for rec in skipped:
                    fh.write(json.dumps(rec) + "\n")
    return out[0], out[1]
