"""The vLLM backend's pieces that need no vLLM (run in the main venv): config keys, model-dir checks,
image-placeholder collapsing, LoRA weight merging for the engine."""

from __future__ import annotations

import json

import pytest
import torch

from vlm_opd.config import config_from_dict
from vlm_opd.errors import ConfigError
from vlm_opd.rollout.vllm_backend import (
    check_model_dir,
    collapse_image_runs,
    student_weights,
    write_video_processor_config,
)


def _cfg(**rollout):
    return config_from_dict({"method": "opd", "student": {"path": "s"}, "teacher": {"path": "t"},
                             "data": {"train": "synthetic:4"}, "rollout": rollout})


def test_rollout_backend_keys_validate():
    cfg = _cfg(backend="vllm", vllm={"gpu_memory_utilization": 0.4, "max_model_len": 4096})
    assert cfg.rollout.backend == "vllm" and cfg.rollout.vllm.gpu_memory_utilization == 0.4
    assert _cfg().rollout.backend == "hf"
    with pytest.raises(ConfigError, match=r"rollout\.backend.*did you mean 'vllm'"):
        _cfg(backend="vlm")
    with pytest.raises(ConfigError, match=r"rollout\.vllm\.gpu_memory_utilization"):
        _cfg(vllm={"gpu_memory_utilization": 1.5})
    with pytest.raises(ConfigError, match=r"rollout\.vllm\.tensor_parallel_size"):
        _cfg(vllm={"tensor_parallel_size": 0})


def test_collapse_image_runs():
    assert collapse_image_runs([1, 9, 9, 9, 2, 9, 3, 9, 9], 9) == [1, 9, 2, 9, 3, 9]
    assert collapse_image_runs([1, 2], 9) == [1, 2]
    assert collapse_image_runs([], 9) == []


def test_video_processor_config_is_written_and_checked(tiny_qwen2vl_dir, tiny_qwen3vl_dir, tmp_path):
    import shutil

    for src, cls in ((tiny_qwen2vl_dir, "Qwen2VLVideoProcessor"), (tiny_qwen3vl_dir, "Qwen3VLVideoProcessor")):
        d = tmp_path / src.name
        shutil.copytree(src, d)
        with pytest.raises(ConfigError, match="video_preprocessor_config.json"):
            check_model_dir(d)
        check_model_dir(d, write_missing=True)  # what training and eval do
        written = json.loads((d / "video_preprocessor_config.json").read_text())
        assert write_video_processor_config(d) == d / "video_preprocessor_config.json"  # kept as is
        image = json.loads((d / "processor_config.json").read_text())["image_processor"]
        assert written["video_processor_type"] == cls
        assert written["patch_size"] == image["patch_size"] and written["image_mean"] == image["image_mean"]
        check_model_dir(d)  # now accepted


def test_student_weights_merge_lora_out_of_place(tiny_qwen2vl_dir):
    from peft import LoraConfig, get_peft_model

    from vlm_opd.models import load_model

    lm = load_model(tiny_qwen2vl_dir)
    plain = dict(student_weights(lm.model))
    assert plain.keys() == dict(lm.model.named_parameters()).keys()
    model = get_peft_model(load_model(tiny_qwen2vl_dir).model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = dict(student_weights(model))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # model untouched
    merged = model.merge_and_unload()
    want = dict(merged.named_parameters())
    assert got.keys() == want.keys()
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-6), k
    assert any("q_proj" in k and not torch.equal(got[k], plain[k]) for k in got)
