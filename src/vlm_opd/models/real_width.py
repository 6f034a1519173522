"""Random models at the real widths of Qwen2.5-VL-3B, Qwen3-VL-2B and Qwen3-VL-8B, depth cut at will.

The paper-scale failure modes (151,936-row vocabularies, hidden 2,048-4,096, hundreds of image tokens
per image) never show on the tiny builders, and real checkpoints cannot be downloaded here. A
`RealPreset` holds the real `config.json` and `preprocessor_config.json` values of one checkpoint;
`build_real_width` builds that architecture with random weights and `text_layers` / `vision_layers`
blocks (None = the real depth), the project's locally trained tokenizer and the real processor's
image-size settings.

Vocabulary: the embedding has the real 151,936 rows. The local tokenizer is much smaller, so rows
past it are padding, exactly as in the real checkpoints (whose `vocab_size` also exceeds the
tokenizer's 151,665 entries): samplers suppress them (`LoadedModel.suppress_token_ids`) and
`check_compatible` compares only the tokenizer's ids. Special-token ids are the local tokenizer's
(e.g. `<|image_pad|>` is not 151655 here).

Where the values come from (checked 2026-12-04):
- Qwen3-VL-2B / 8B config.json: https://huggingface.co/Qwen/Qwen3-VL-2B-Instruct/blob/main/config.json
  and https://huggingface.co/Qwen/Qwen3-VL-8B-Instruct/blob/main/config.json, read through copies
  in the search index (the hub pages themselves are not indexed): pytorch/torchtitan
  torchtitan/experiments/qwen3_vl/__init__.py @ 0375bb6789fa55559e7bb58d81e8cca47cb418a1 (its "2B"
  and "8B" flavours list every width below, `enable_weight_tying=True` for 2B only), the ollama
  GGUF metadata of qwen3-vl:8b-instruct (hidden 4096, FFN 12288, 36 blocks, 32/8 heads, head 128,
  rope base 5e6, vision 27 blocks / 1152 / deepstack [8, 16, 24]) and the transformers-5 config of
  a Qwen3-VL-32B derivative for the key names (`rope_parameters` with `mrope_interleaved: true`,
  `mrope_section: [24, 20, 20]`, `rope_theta: 5000000`, `max_position_embeddings: 262144`).
- Qwen3-VL preprocessor_config.json (all sizes): `size: {shortest_edge: 65536, longest_edge:
  16777216}` (pixels), patch 16, temporal patch 2, merge 2, mean = std = 0.5; e.g.
  https://huggingface.co/cdreetz/Qwen3-VL-8B-Instruct/blob/main/preprocessor_config.json (a copy).
- Qwen2.5-VL-3B config.json: https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct/blob/main/config.json
  via https://huggingface.co/dahwinsingularity/vllm2/blob/main/config.json (`_name_or_path`
  Qwen/Qwen2.5-VL-3B-Instruct): hidden 2048, FFN 11008, 36 layers, 16/2 heads, rope_theta 1e6,
  mrope_section [16, 24, 24], max_position_embeddings 128000, tie_word_embeddings true; its
  vision_config lists only hidden 1280, out_hidden 2048, patch 14, tokens_per_second 2, and takes
  depth 32, intermediate 3420, 16 heads, window 112, fullatt_block_indexes [7, 15, 23, 31], silu
  from the `Qwen2_5_VLVisionConfig` defaults (transformers 5.25 prints exactly these).
- Qwen2.5-VL preprocessor_config.json: min_pixels 3136, max_pixels 12845056, patch 14, temporal 2,
  merge 2, CLIP mean/std; https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct-AWQ/blob/main/preprocessor_config.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlm_opd.errors import ConfigError

QWEN_VOCAB_ROWS = 151936
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class RealPreset:
    """The real architecture of one checkpoint (values from its config.json / preprocessor_config.json).

    Attributes:
        name: preset key, e.g. "qwen3_vl_2b".
        checkpoint: the hub id whose config this is.
        family: "qwen2_5_vl" or "qwen3_vl".
        text: text-model keys (hidden_size, heads, ...); `num_hidden_layers` is the real depth.
        vision: vision-tower keys; `depth` is the real depth.
        tie_word_embeddings: lm_head shares the input embedding (2B/3B: yes, 8B: no).
        image: real image-processor settings (min/max pixels, patch, merge, mean/std).
    """

    name: str
    checkpoint: str
    family: str
    text: dict[str, Any]
    vision: dict[str, Any]
    tie_word_embeddings: bool
    image: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return int(self.text["hidden_size"])

    @property
    def text_depth(self) -> int:
        return int(self.text["num_hidden_layers"])

    @property
    def vision_depth(self) -> int:
        return int(self.vision["depth"])


_QWEN3_VL_IMAGE = dict(min_pixels=65536, max_pixels=16777216, patch_size=16, merge_size=2, temporal_patch_size=2,
                       image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
_QWEN3_VL_ROPE = {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                  "mrope_interleaved": True}

REAL_PRESETS: dict[str, RealPreset] = {
    "qwen2_5_vl_3b": RealPreset(
        name="qwen2_5_vl_3b",
        checkpoint="Qwen/Qwen2.5-VL-3B-Instruct",
        family="qwen2_5_vl",
        text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                  num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=128000, hidden_act="silu",
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
        vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                    patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                    fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu"),
        tie_word_embeddings=True,
        image=dict(min_pixels=3136, max_pixels=12845056, patch_size=14, merge_size=2, temporal_patch_size=2,
                   image_mean=_CLIP_MEAN, image_std=_CLIP_STD),
    ),
    "qwen3_vl_2b": RealPreset(
        name="qwen3_vl_2b",
        checkpoint="Qwen/Qwen3-VL-2B-Instruct",
        family="qwen3_vl",
        text=dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6, max_position_embeddings=262144,
                  hidden_act="silu", rope_parameters=_QWEN3_VL_ROPE),
        vision=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                    patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                    deepstack_visual_indexes=[5, 11, 17], hidden_act="gelu_pytorch_tanh"),
        tie_word_embeddings=True,
        image=_QWEN3_VL_IMAGE,
    ),
    "qwen3_vl_8b": RealPreset(
        name="qwen3_vl_8b",
        checkpoint="Qwen/Qwen3-VL-8B-Instruct",
        family="qwen3_vl",
        text=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                  num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6, max_position_embeddings=262144,
                  hidden_act="silu", rope_parameters=_QWEN3_VL_ROPE),
        vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                    patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                    deepstack_visual_indexes=[8, 16, 24], hidden_act="gelu_pytorch_tanh"),
        tie_word_embeddings=False,
        image=_QWEN3_VL_IMAGE,
    ),
}


def get_preset(name: str) -> RealPreset:
    if name not in REAL_PRESETS:
        raise ConfigError(f"real-width preset {name!r} is unknown; expected one of {', '.join(REAL_PRESETS)}")
    return REAL_PRESETS[name]


def _check_depth(what: str, value: int | None, full: int) -> int:
    if value is None:
        return full
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= full:
        raise ConfigError(f"real-width {what}={value!r}: expected an integer in [1, {full}] (None = the real {full})")
    return value


def _cut_indexes(indexes: list[int], full: int, depth: int) -> list[int]:
    """Block indexes of a `full`-deep tower mapped onto `depth` blocks, same relative position, deduplicated."""
    if depth == full:
        return list(indexes)
    return sorted({min(i * depth // full, depth - 1) for i in indexes})


def real_width_config(preset: str | RealPreset, tokenizer, *, text_layers: int | None = 1,
                      vision_layers: int | None = 1, vocab_size: int = QWEN_VOCAB_ROWS):
    """The transformers config of `preset` with the depth cut to `text_layers` / `vision_layers`.

    Every width is the real one. Cutting the depth keeps the vision tower's block pattern at the same
    relative positions: Qwen2.5-VL's full-attention blocks (the last block when none survives, so a
    cut tower still has one) and Qwen3-VL's deepstack taps (at most `text_layers` of them, since
    deepstack features feed the first text layers only and the rest would be dead parameters).

    Args:
        preset: preset name or `RealPreset`.
        tokenizer: supplies the special-token ids (the local tokenizer's, not the real 151643...).
        text_layers, vision_layers: blocks to keep (None = real depth).
        vocab_size: embedding rows (real: 151,936).
    """
    p = preset if isinstance(preset, RealPreset) else get_preset(preset)
    n_text = _check_depth("text_layers", text_layers, p.text_depth)
    n_vis = _check_depth("vision_layers", vision_layers, p.vision_depth)
    if vocab_size < len(tokenizer):
        raise ConfigError(f"real-width vocab_size={vocab_size} is smaller than the tokenizer ({len(tokenizer)} entries)")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in
           ("<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    text = dict(p.text, num_hidden_layers=n_text, vocab_size=vocab_size, pad_token_id=ids["<|endoftext|>"],
                tie_word_embeddings=p.tie_word_embeddings)
    vision = dict(p.vision, depth=n_vis)
    mm_ids = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if p.family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        full = [i for i in p.vision["fullatt_block_indexes"] if i < n_vis] or [n_vis - 1]
        vision["fullatt_block_indexes"] = full if n_vis < p.vision_depth else list(p.vision["fullatt_block_indexes"])
        text.update(bos_token_id=None, eos_token_id=ids["<|im_end|>"])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                                tie_word_embeddings=p.tie_word_embeddings, **mm_ids)
    if p.family == "qwen3_vl":
        from transformers import Qwen3VLConfig

        taps = _cut_indexes(p.vision["deepstack_visual_indexes"], p.vision_depth, n_vis)
        vision["deepstack_visual_indexes"] = taps[:n_text]
        return Qwen3VLConfig(text_config=text, vision_config=vision,
                             tie_word_embeddings=p.tie_word_embeddings, **mm_ids)
    raise ConfigError(f"real-width preset {p.name!r} has unsupported family {p.family!r}")


def real_image_processor(preset: str | RealPreset):
    """PIL-backend Qwen-VL image processor with the real checkpoint's pixel bounds, patch and merge sizes."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    p = preset if isinstance(preset, RealPreset) else get_preset(preset)
    return Qwen2VLImageProcessorPil(**p.image)


def build_real_width(
    preset: str,
    out_dir: str | Path | None = None,
    *,
    text_layers: int | None = 1,
    vision_layers: int | None = 1,
    tokenizer_vocab: int = 1024,
    seed: int = 0,
    tokenizer_seed: int = 0,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
):
    """Build a random model at the real width of `preset` (depth cut to `text_layers` / `vision_layers`).

    The weights are initialised directly in `dtype` on `device` (a full-depth Qwen3-VL-8B is 35 GB in
    float32; build it in bfloat16 on the GPU). Models built with the same `seed` and
    `tokenizer_seed` share one tokenizer, so any two of them can be a teacher/student pair.

    Args:
        preset: one of `REAL_PRESETS` ("qwen2_5_vl_3b", "qwen3_vl_2b", "qwen3_vl_8b").
        out_dir: when given, the model, tokenizer and processor are also saved there (a normal
            checkpoint directory that `load_model` reads); the returned model is the in-memory one.
        text_layers, vision_layers: blocks kept (None = the real depth).
        tokenizer_vocab: entries of the locally trained tokenizer (the embedding keeps 151,936 rows).
        seed: weight-init seed.
        tokenizer_seed: seed of the tokenizer corpus; models with the same `tokenizer_seed` and
            `tokenizer_vocab` share one tokenizer (and share it with `build_tiny(seed=...)`).
        dtype: "float32", "bfloat16" or "float16".
        device: where the weights are created.

    Returns:
        `LoadedModel` in eval mode; `.name_or_path` is `out_dir` or "real-width:<preset>".
    """
    from transformers import AutoModelForImageTextToText, GenerationConfig

    from vlm_opd.models.loading import _DTYPES, LoadedModel, make_processor
    from vlm_opd.models.tiny import train_tiny_tokenizer

    p = get_preset(preset)
    if dtype not in _DTYPES:
        raise ConfigError(f"build_real_width: dtype={dtype!r}; expected one of {', '.join(_DTYPES)}")
    tokenizer = train_tiny_tokenizer(tokenizer_vocab, seed=tokenizer_seed)
    config = real_width_config(p, tokenizer, text_layers=text_layers, vision_layers=vision_layers)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, dtype=_DTYPES[dtype])
    model.to_empty(device=device)
    model.tie_weights()  # to_empty gives each module its own storage: re-share embedding and lm_head
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    if tied != p.tie_word_embeddings:
        raise RuntimeError(f"build_real_width: lm_head tied={tied} but {p.checkpoint} has "
                           f"tie_word_embeddings={p.tie_word_embeddings}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _fast_random_init(model, float(getattr(config, "initializer_range", 0.02) or 0.02))
    model.eval()
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=eos[1], do_sample=True)
    processor = make_processor(p.family, real_image_processor(p), tokenizer)
    name = f"real-width:{p.name}"
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        processor.save_pretrained(out)
        meta = {"preset": p.name, "checkpoint": p.checkpoint, "text_layers": config.text_config.num_hidden_layers,
                "vision_layers": config.vision_config.depth, "seed": seed, "tokenizer_seed": tokenizer_seed,
                "tokenizer_vocab": tokenizer_vocab}
        (out / "vlm_opd_real_width.json").write_text(json.dumps(meta, indent=1) + "\n")
        name = str(out)
    return LoadedModel(model=model, processor=processor, tokenizer=processor.tokenizer, is_vision=True,
                       family=p.family, name_or_path=name)


@torch.no_grad()
def _fast_random_init(model, std: float) -> None:
    """Initialise a `to_empty` model: matrices uniform with standard deviation `std`, the rest as transformers does.

    transformers draws N(0, std) for every Linear / Conv / Embedding weight; `normal_` on a
    151,936 x 2,048 embedding takes seconds on one core, `uniform_` a fraction of that, and the
    distribution of a random model's weights matters to nothing here but their scale. Everything
    else (norm weights 1, biases 0, the rotary `inv_freq` buffers that `to_empty` left undefined) is
    filled by the model's own `initialize_weights`, which skips tensors flagged as initialised.
    """
    bound = std * 3**0.5  # U(-b, b) has standard deviation b / sqrt(3)
    for p in model.parameters():
        if p.dim() >= 2:
            p.uniform_(-bound, bound)
            p._is_hf_initialized = True
        else:
            p._is_hf_initialized = False
    for b in model.buffers():
        b._is_hf_initialized = False
    for m in model.modules():  # construction on the meta device marked every module done
        m._is_hf_initialized = False
    model.initialize_weights()
    for name, b in model.named_buffers():  # (parameters are all written above; buffers are few and small)
        if b.is_floating_point() and not torch.isfinite(b).all():
            raise RuntimeError(f"build_real_width: buffer {name} was left uninitialised")


def preset_param_count(preset: str, *, text_layers: int | None = None, vision_layers: int | None = None) -> int:
    """Parameters of `preset` at the given depth, counted on the meta device (nothing allocated)."""
    from transformers import AutoModelForImageTextToText

    from vlm_opd.models.tiny import train_tiny_tokenizer

    config = real_width_config(preset, train_tiny_tokenizer(1024), text_layers=text_layers, vision_layers=vision_layers)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return sum(p.numel() for p in model.parameters())


__all__ = ["QWEN_VOCAB_ROWS", "REAL_PRESETS", "RealPreset", "build_real_width", "get_preset",
           "preset_param_count", "real_image_processor", "real_width_config"]
