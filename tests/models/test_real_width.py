"""Real-width presets: the configs reproduce the real checkpoints' parameter counts; depth cuts; CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from vlm_opd.errors import ConfigError
from vlm_opd.memprobe import VocabShapeProbe, cpu_peak_allocated
from vlm_opd.models.real_width import (
    QWEN_VOCAB_ROWS,
    REAL_PRESETS,
    preset_param_count,
    real_image_processor,
    real_width_config,
)
from vlm_opd.models.tiny import train_tiny_tokenizer


@pytest.mark.parametrize("preset,params", [
    # Exact totals of the published safetensors (Qwen2.5-VL-3B: 3,754,622,976; Qwen3-VL-2B: 2,127,532,032;
    # Qwen3-VL-8B: 8,767,123,696, as the hub's model pages list them). Any wrong width, head count,
    # tie or vision size changes the count.
    ("qwen2_5_vl_3b", 3_754_622_976),
    ("qwen3_vl_2b", 2_127_532_032),
    ("qwen3_vl_8b", 8_767_123_696),
])
def test_full_depth_presets_have_the_real_parameter_count(preset, params):
    assert preset_param_count(preset) == params


def test_depth_cut_keeps_widths_and_block_patterns():
    tok = train_tiny_tokenizer(1024)
    c = real_width_config("qwen3_vl_8b", tok, text_layers=2, vision_layers=2)
    t, v = c.text_config, c.vision_config
    assert (t.hidden_size, t.intermediate_size, t.num_attention_heads, t.num_key_value_heads, t.head_dim) == (
        4096, 12288, 32, 8, 128)
    assert t.vocab_size == QWEN_VOCAB_ROWS and t.num_hidden_layers == 2 and v.depth == 2
    assert t.rope_parameters["mrope_section"] == [24, 20, 20] and t.rope_parameters["rope_theta"] == 5e6
    assert v.deepstack_visual_indexes == [0, 1]  # [8, 16, 24] of 27 at the same relative depth, <= text layers
    assert c.tie_word_embeddings is False
    c1 = real_width_config("qwen3_vl_2b", tok, text_layers=1, vision_layers=1)
    assert c1.vision_config.deepstack_visual_indexes == [0] and c1.tie_word_embeddings is True
    q = real_width_config("qwen2_5_vl_3b", tok, text_layers=1, vision_layers=2)
    assert q.vision_config.fullatt_block_indexes == [1] and q.vision_config.window_size == 112
    full = real_width_config("qwen2_5_vl_3b", tok, text_layers=None, vision_layers=None)
    assert full.vision_config.fullatt_block_indexes == [7, 15, 23, 31] and full.text_config.num_hidden_layers == 36
    assert c.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")


def test_bad_depth_and_preset_are_named():
    tok = train_tiny_tokenizer(1024)
    with pytest.raises(ConfigError, match="text_layers=0"):
        real_width_config("qwen3_vl_2b", tok, text_layers=0)
    with pytest.raises(ConfigError, match="vision_layers=25"):
        real_width_config("qwen3_vl_2b", tok, vision_layers=25)
    with pytest.raises(ConfigError, match="qwen9"):
        real_width_config("qwen9", tok)


@pytest.mark.parametrize("preset,side,tokens", [("qwen3_vl_2b", 448, 196), ("qwen2_5_vl_3b", 448, 256)])
def test_real_image_processor_token_counts(preset, side, tokens):
    from PIL import Image

    proc = real_image_processor(preset)
    out = proc(images=[Image.new("RGB", (side, side), (120, 30, 200))], return_tensors="pt")
    assert int(out["image_grid_thw"].prod()) // 4 == tokens  # merge 2 x 2
    # Below min_pixels the real processors upscale: 32 x 32 becomes >= 256 x 256 for Qwen3-VL.
    small = proc(images=[Image.new("RGB", (32, 32))], return_tensors="pt")["image_grid_thw"]
    assert int(small.prod()) * REAL_PRESETS[preset].image["patch_size"] ** 2 >= REAL_PRESETS[preset].image["min_pixels"]


def test_cli_preset_choices_match_the_library():
    from vlm_opd.commands.build_tiny import PRESETS

    assert set(PRESETS) == set(REAL_PRESETS)


@pytest.mark.slow
def test_build_tiny_cli_preset_round_trips(tmp_path):
    out = tmp_path / "rw"
    # Qwen2.5-VL-3B at real width, 1 text / 1 vision block: 446M parameters, saved and loaded back.
    proc = subprocess.run([sys.executable, "-m", "vlm_opd.cli", "build-tiny", "--preset", "qwen2_5_vl_3b",
                           "--layers", "1", "--dtype", "bfloat16", "--out", str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "vocab 151936" in proc.stdout and "hidden 2048" in proc.stdout
    meta = json.loads((out / "vlm_opd_real_width.json").read_text())
    assert meta["preset"] == "qwen2_5_vl_3b" and meta["text_layers"] == 1
    from vlm_opd.models import load_model

    lm = load_model(out)
    assert lm.vocab_size == QWEN_VOCAB_ROWS and lm.hidden_size == 2048 and lm.dtype == torch.bfloat16
    assert lm.processor.image_processor.size.longest_edge == 12845056  # max_pixels


# ---- the probes themselves: they must see what they claim to see -------------------------------


def test_vocab_shape_probe_flags_full_logits_and_passes_chunks():
    from vlm_opd.algorithms import chunked_divergence, reverse_kl

    n, h, v, chunk = 40, 6, 97, 8
    hs = torch.randn(n, h, requires_grad=True)
    ws = torch.randn(v, h, requires_grad=True)
    ht, wt = torch.randn(n, h), torch.randn(v, h)
    with VocabShapeProbe(v, chunk, allowed_shapes=[(v, h), (h, v)]) as ok:
        chunked_divergence(hs, ws, ht, wt, chunk_size=chunk).sum().backward()
    assert ok.seen > 0 and not ok.violations and ok.max_rows_seen == chunk
    with VocabShapeProbe(v, chunk, allowed_shapes=[(v, h), (h, v)]) as bad:
        reverse_kl(hs @ ws.T, ht @ wt.T).sum().backward()
    assert bad.violations and bad.violations[0].shape == (n, v)


def test_cpu_peak_allocated_sees_a_transient_tensor():
    def fn():
        a = torch.ones(1000, 1000)  # 4 MB, freed before returning
        b = a * 2
        del a
        return float(b.sum())

    mem = cpu_peak_allocated(fn)
    assert mem.peak_bytes >= 8_000_000  # a and b coexisted
    assert mem.end_bytes < 1_000_000 and mem.result == 2_000_000.0
