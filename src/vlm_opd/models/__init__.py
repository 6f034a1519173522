"""Load image-text-to-text models (or text-only LMs), build tiny offline ones, encode prompts."""

from vlm_opd.models.compat import check_compatible
from vlm_opd.models.loading import LoadedModel, load_model, make_processor, unwrap_model
from vlm_opd.models.real_width import REAL_PRESETS, build_real_width
from vlm_opd.models.prompts import build_messages, encode_prompts, open_image, render_prompt
from vlm_opd.models.tiny import TINY_FAMILIES, build_tiny, save_processor, train_tiny_tokenizer

__all__ = [
    "REAL_PRESETS",
    "TINY_FAMILIES",
    "LoadedModel",
    "build_messages",
    "build_real_width",
    "build_tiny",
    "check_compatible",
    "encode_prompts",
    "load_model",
    "make_processor",
    "open_image",
    "render_prompt",
    "save_processor",
    "train_tiny_tokenizer",
    "unwrap_model",
]
