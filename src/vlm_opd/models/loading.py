"""Load any image-text-to-text checkpoint (or a text-only causal LM) into one `LoadedModel` bundle.

Qwen-VL processors are built without a video processor: the stock `AutoProcessor` path constructs
the video processor, which needs torchvision, and this library does not depend on torchvision. Images
go through the PIL-backend image processor, which gives the same patches on every machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from vlm_opd.errors import ModelError

# model_type -> family name used across the library.
QWEN_VL_FAMILIES = {
    "qwen2_vl": "qwen2_vl",
    "qwen2_5_vl": "qwen2_5_vl",
    "qwen3_vl": "qwen3_vl",
    "qwen3_vl_moe": "qwen3_vl",
}

# Tokens that only make sense inside a prompt's vision block. Sampling one would make re-scoring fail
# (the model would look for an image to fill an `<|image_pad|>`), so samplers suppress them.
VISION_SPECIAL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def unwrap_model(model):
    """The transformers model inside DDP / torch.compile / PEFT wrappers (LoRA layers stay injected)."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "get_base_model") and type(model).__name__.startswith("Peft"):
            model = model.get_base_model()
        else:
            return model


@dataclass
class LoadedModel:
    """A model with everything needed to prompt, sample and score it.

    Attributes:
        model: the transformers model (`...ForConditionalGeneration` or `...ForCausalLM`), possibly
            wrapped (DDP, PEFT); the helpers below look through wrappers.
        processor: multimodal processor (tokenizer + image processor + chat template); None for a
            text-only LM.
        tokenizer: the tokenizer (left padding).
        is_vision: True when the model accepts images.
        family: "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "text", or another VLM's model_type.
        name_or_path: what it was loaded from.
        chat_template_kwargs: extra variables for the chat template (e.g. `{"enable_thinking": False}`
            for Qwen3 text teachers).
    """

    model: Any
    processor: Any
    tokenizer: Any
    is_vision: bool
    family: str
    name_or_path: str
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    # Where inputs go when the weights live elsewhere (FSDP with CPU offload: shards in CPU memory,
    # compute on the accelerator). None: the lm_head weight's device.
    compute_device: torch.device | None = None

    @property
    def base(self):
        """`model` without DDP / PEFT / compile wrappers."""
        return unwrap_model(self.model)

    @property
    def config(self):
        return self.base.config

    @property
    def text_config(self):
        return self.config.get_text_config(decoder=True)

    @property
    def device(self) -> torch.device:
        return self.compute_device if self.compute_device is not None else self.lm_head_weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head_weight.dtype

    @property
    def lm_head_weight(self) -> torch.Tensor:
        """Output projection weight `[V, H]` (V = embedding rows, may exceed the tokenizer size)."""
        return self.base.get_output_embeddings().weight

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def vocab_size(self) -> int:
        """Rows of the output projection (logit width)."""
        return int(self.lm_head_weight.shape[0])

    @cached_property
    def image_token_id(self) -> int | None:
        """Id of the image placeholder token (`<|image_pad|>` for Qwen-VL); None for text-only LMs."""
        if not self.is_vision:
            return None
        tid = getattr(self.config, "image_token_id", None)
        if tid is None:
            tid = getattr(self.config, "image_token_index", None)
        if tid is None and self.processor is not None:
            tid = getattr(self.processor, "image_token_id", None)
        return None if tid is None else int(tid)

    @cached_property
    def vision_token_ids(self) -> tuple[int, ...]:
        """Vision special-token ids present in this vocabulary; samplers suppress them."""
        vocab = self.tokenizer.get_vocab()
        ids = {vocab[t] for t in VISION_SPECIAL_TOKENS if t in vocab}
        for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
            v = getattr(self.config, key, None)
            if isinstance(v, int):
                ids.add(v)
        return tuple(sorted(i for i in ids if i < self.vocab_size))

    @cached_property
    def suppress_token_ids(self) -> tuple[int, ...]:
        """Ids a sampler must never emit: vision special tokens and embedding rows past the tokenizer.

        Rows beyond `len(tokenizer)` are padding in real checkpoints too; a sampled one could not be
        decoded, and a teacher with a different padding size could not score it.
        """
        n_tok = len(self.tokenizer)
        return tuple(sorted(set(self.vision_token_ids) | set(range(n_tok, self.vocab_size))))

    @cached_property
    def eos_token_ids(self) -> tuple[int, ...]:
        """All ids that end a completion: the generation config's EOS list plus the tokenizer's EOS."""
        ids: list[int] = []
        gen = getattr(self.base, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        if isinstance(eos, int):
            ids.append(eos)
        elif eos is not None:
            ids.extend(int(e) for e in eos)
        if self.tokenizer.eos_token_id is not None:
            ids.append(int(self.tokenizer.eos_token_id))
        if not ids:
            raise ModelError(f"model {self.name_or_path!r} defines no EOS token (generation_config or tokenizer)")
        return tuple(dict.fromkeys(ids))

    @cached_property
    def pad_token_id(self) -> int:
        if self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        gen = getattr(self.base, "generation_config", None)
        if gen is not None and gen.pad_token_id is not None:
            return int(gen.pad_token_id)
        return self.eos_token_ids[0]

    @cached_property
    def encoding_key(self) -> str:
        """Fingerprint of how this model turns an Example into input ids and pixels.

        Two models with the same key encode every prompt identically, so a rollout's stored prompt
        encoding can be reused to score it (e.g. a same-family teacher on the student's rollout).
        """
        parts: dict[str, Any] = {
            "tokenizer": type(self.tokenizer).__name__,
            "vocab": hashlib.sha256(
                json.dumps(sorted(self.tokenizer.get_vocab().items())).encode()
            ).hexdigest(),
            "template": _chat_template_of(self),
            "template_kwargs": self.chat_template_kwargs,
            "is_vision": self.is_vision,
        }
        if self.processor is not None and hasattr(self.processor, "image_processor"):
            parts["image_processor"] = self.processor.image_processor.to_dict()
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    def to(self, device: str | torch.device) -> LoadedModel:
        """Move the model to `device` (in place) and return self."""
        self.model.to(device)
        return self


def _chat_template_of(lm: LoadedModel) -> str | None:
    tmpl = getattr(lm.processor, "chat_template", None) if lm.processor is not None else None
    if tmpl is None:
        tmpl = getattr(lm.tokenizer, "chat_template", None)
    if isinstance(tmpl, dict):
        tmpl = tmpl.get("default") or next(iter(tmpl.values()))
    return tmpl


_NO_VIDEO_CLASSES: dict[type, type] = {}


def _no_video_processor_class(base: type) -> type:
    """Subclass of a Qwen-VL processor whose only sub-processors are image processor and tokenizer.

    `ProcessorMixin` discovers sub-processors from the `__init__` signature; leaving
    `video_processor` out of it means nothing tries to build (or save) a video processor. The
    subclass keeps the base class name, so `save_pretrained` records the real processor class and
    other tools (AutoProcessor with torchvision installed) can load the saved directory.
    """
    if base not in _NO_VIDEO_CLASSES:

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            base.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

        _NO_VIDEO_CLASSES[base] = type(
            base.__name__,
            (base,),
            {"__init__": __init__, "__module__": __name__, "__qualname__": base.__name__, "video_free": True},
        )
    return _NO_VIDEO_CLASSES[base]


def make_processor(family: str, image_processor, tokenizer, chat_template: str | None = None):
    """Build a Qwen-VL processor with no video processor (works without torchvision).

    Args:
        family: "qwen2_vl", "qwen2_5_vl" or "qwen3_vl".
        image_processor: a Qwen2-VL image processor (the PIL backend is fine).
        tokenizer: the model's tokenizer.
        chat_template: Jinja template; defaults to the tokenizer's.
    """
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor, Qwen3VLProcessor

    bases = {"qwen2_vl": Qwen2VLProcessor, "qwen2_5_vl": Qwen2_5_VLProcessor, "qwen3_vl": Qwen3VLProcessor}
    if family not in bases:
        raise ModelError(f"make_processor: no Qwen-VL processor for family {family!r}; expected one of {sorted(bases)}")
    cls = _no_video_processor_class(bases[family])
    return cls(image_processor, tokenizer, chat_template=chat_template or tokenizer.chat_template)


def _resolve_source(name_or_path: str | os.PathLike) -> tuple[str, bool]:
    """(string, is_local_dir). Paths that look local but do not exist raise ModelError."""
    s = os.fspath(name_or_path)
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"model path {s!r} is a file; expected a checkpoint directory (config.json, weights)")
        if not (p / "config.json").exists():
            raise ModelError(f"model directory {s!r} has no config.json; expected a saved transformers checkpoint")
        return str(p), True
    looks_local = s.startswith(("/", "./", "../", "~", ".\\")) or s.count("/") > 1 or "\\" in s or s in (".", "..")
    if looks_local or not s:
        raise ModelError(f"model path {s!r} does not exist")
    return s, False


def _read_optional(src: str, local: bool, filename: str) -> str | None:
    if local:
        f = Path(src) / filename
        return f.read_text(encoding="utf-8") if f.exists() else None
    try:
        from transformers.utils import cached_file

        path = cached_file(src, filename, _raise_exceptions_for_missing_entries=False)
    except Exception:  # noqa: BLE001 - an optional file; absence is fine
        return None
    return Path(path).read_text(encoding="utf-8") if path else None


def _processor_chat_template(src: str, local: bool, tokenizer) -> str | None:
    jinja = _read_optional(src, local, "chat_template.jinja")
    if jinja:
        return jinja
    js = _read_optional(src, local, "chat_template.json")
    if js:
        tmpl = json.loads(js).get("chat_template")
        if tmpl:
            return tmpl
    return tokenizer.chat_template


def load_model(
    name_or_path: str | os.PathLike,
    *,
    kind: str = "auto",
    dtype: str = "auto",
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a checkpoint from a local directory or a hub name into a `LoadedModel` (eval mode).

    Args:
        name_or_path: local checkpoint directory or hub id.
        kind: "vlm" (AutoModelForImageTextToText + processor), "lm" (AutoModelForCausalLM, text
            only), or "auto" (VLM when the config has a vision part).
        dtype: "auto" (checkpoint dtype), "float32", "bfloat16" or "float16".
        device: where to put the model.
        attn_implementation: e.g. "sdpa", "eager", "flash_attention_2"; None = transformers default.
        trust_remote_code: forwarded to transformers.
        chat_template_kwargs: extra chat template variables used when rendering prompts.

    Raises:
        ModelError: the path is missing, the kind/dtype is unknown, or transformers cannot load it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    if kind not in ("auto", "vlm", "lm"):
        raise ModelError(f"load_model: kind={kind!r}; expected 'auto', 'vlm' or 'lm'")
    if dtype != "auto" and dtype not in _DTYPES:
        raise ModelError(f"load_model: dtype={dtype!r}; expected 'auto', {', '.join(map(repr, _DTYPES))}")
    src, local = _resolve_source(name_or_path)
    common = dict(trust_remote_code=trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(src, **common)
    except Exception as e:  # noqa: BLE001 - any failure here means "cannot load this model"
        raise ModelError(f"cannot load model config from {src!r}: {type(e).__name__}: {e}") from e
    has_vision = getattr(config, "vision_config", None) is not None
    if kind == "auto":
        kind = "vlm" if has_vision else "lm"
    if kind == "vlm" and not has_vision:
        raise ModelError(f"model {src!r} (model_type={config.model_type!r}) has no vision_config; load it with kind='lm'")

    load_kwargs: dict[str, Any] = dict(common, dtype=_DTYPES.get(dtype, "auto"))
    if attn_implementation is not None:
        load_kwargs["attn_implementation"] = attn_implementation
    auto = AutoModelForImageTextToText if kind == "vlm" else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(src, **load_kwargs)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"cannot load {auto.__name__} from {src!r}: {type(e).__name__}: {e}") from e
    model.to(device)
    model.eval()

    try:
        tokenizer = AutoTokenizer.from_pretrained(src, **common)
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"cannot load tokenizer from {src!r}: {type(e).__name__}: {e}") from e
    # Prompts are left-padded so every row's last prompt token sits in the same column.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token

    processor = None
    family = "text"
    if kind == "vlm":
        family = QWEN_VL_FAMILIES.get(config.model_type, config.model_type)
        try:
            if family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
                from transformers import AutoImageProcessor

                image_processor = AutoImageProcessor.from_pretrained(src, backend="pil", **common)
                processor = make_processor(
                    family, image_processor, tokenizer, _processor_chat_template(src, local, tokenizer)
                )
            else:
                from transformers import AutoProcessor

                processor = AutoProcessor.from_pretrained(src, **common)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"cannot build the processor for {src!r}: {type(e).__name__}: {e}") from e
        # The processor may hold its own tokenizer object; keep one, left-padded.
        if getattr(processor, "tokenizer", None) is not None:
            processor.tokenizer.padding_side = "left"
            tokenizer = processor.tokenizer
    return LoadedModel(
        model=model,
        processor=processor,
        tokenizer=tokenizer,
        is_vision=kind == "vlm",
        family=family,
        name_or_path=str(name_or_path),
        chat_template_kwargs=dict(chat_template_kwargs or {}),
    )
