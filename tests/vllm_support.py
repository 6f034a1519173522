"""Shared pieces of the vLLM tests (they run in the vLLM venv: `make test-vllm`).

In the main venv vLLM is not installed and every `vllm`-marked test skips. `make test-vllm` sets
VLM_OPD_REQUIRE_VLLM=1, which turns a failed vLLM import into an error, so that stage can never
pass by skipping.
"""

from __future__ import annotations

import os

import pytest
import torch

# Small fixed KV cache: the CPU build would otherwise reserve a share of the machine's RAM.
ENGINE_KW = dict(dtype="float32", kv_cache_memory_bytes=32 << 20, max_model_len=512, enforce_eager=True)
# Text head size 32: vLLM's CPU attention supports 32, 64, 80, ... (the default tiny models use 16).
VLLM_TINY_KW = dict(seed=0, eos_boost=3.0, text_heads=2, text_kv_heads=1)


def require_vllm():
    """Import vllm, or skip (main venv) / fail (VLM_OPD_REQUIRE_VLLM=1, the vLLM venv)."""
    if os.environ.get("VLM_OPD_REQUIRE_VLLM") == "1":
        import vllm  # noqa: F401  (an ImportError here fails the test run)

        return
    pytest.importorskip("vllm", reason="vLLM is not installed in this venv (run `make test-vllm`)")


def build_vllm_tiny(family: str, out_dir, **kw):
    """A tiny model directory vLLM accepts (head size 32, video processor config written)."""
    from vlm_opd.models import build_tiny
    from vlm_opd.rollout.vllm_backend import write_video_processor_config

    lm = build_tiny(family, out_dir, **{**VLLM_TINY_KW, **kw})
    if family != "qwen3":
        write_video_processor_config(out_dir)
    return lm


def hf_sampler_logprobs(lm, rollout, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """`[B, T]` log-probs of the sampled tokens under the HF model's sampling distribution, naively:
    full logits, suppressed ids -inf, / temperature, top-p, log_softmax (0 at masked positions)."""
    from vlm_opd.rollout.backends import top_p_filter

    with torch.no_grad():
        logits = lm.model(**rollout.model_inputs()).logits.float()  # [B, Lp + T, V]
    lp_len = rollout.prompt_ids.shape[1]
    t = rollout.completion_ids.shape[1]
    step = logits[:, lp_len - 1 : lp_len - 1 + t]  # [B, T, V]
    step = step.index_fill(2, torch.tensor(lm.suppress_token_ids), float("-inf")) / temperature
    b, _, v = step.shape
    step = top_p_filter(step.reshape(b * t, v), top_p).reshape(b, t, v)
    lp = step.log_softmax(-1).gather(2, rollout.completion_ids.unsqueeze(-1)).squeeze(-1)
    return torch.where(rollout.completion_mask.bool(), lp, torch.zeros_like(lp))
