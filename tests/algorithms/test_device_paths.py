"""Device-specific code paths a CPU test would otherwise never reach.

On CUDA, `torch.rand(..., generator=cpu_generator, device="cuda")` raises; on the CPU nothing does, so
the token-mask ablation drew its random keys that way unnoticed. Here tensors live on the `meta`
device (a device other than the generator's that needs no GPU), and `GeneratorDeviceCheck` raises
exactly where CUDA would: a random draw on one device from a generator on another.
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from vlm_opd import algorithms as A
from vlm_opd.rollout.backends import RowUniforms

_RANDOM = {torch.rand, torch.randn, torch.randint, torch.randperm, torch.rand_like, torch.randn_like,
           torch.randint_like, torch.normal, torch.bernoulli, torch.multinomial, torch.Tensor.uniform_,
           torch.Tensor.normal_, torch.Tensor.random_, torch.Tensor.bernoulli_, torch.Tensor.exponential_}


class GeneratorDeviceCheck(TorchFunctionMode):
    """Raise, as CUDA does, when a random op draws on a device other than its generator's."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        gen = kwargs.get("generator")
        if func in _RANDOM and gen is not None:
            target = kwargs.get("device")
            if target is None:
                tensors = [a for a in args if isinstance(a, torch.Tensor)]
                target = tensors[0].device if tensors else torch.device("cpu")
            if torch.device(target).type != gen.device.type:
                raise RuntimeError(f"{func.__name__}: generator on {gen.device} used for a draw on {target}")
        return func(*args, **kwargs)


def test_the_check_catches_the_old_token_mask_pattern():
    """The exact pattern the ablation used (CPU generator, draw on the tensors' device) must raise."""
    gen = torch.Generator().manual_seed(0)
    va = torch.zeros(2, 5, device="meta")
    with GeneratorDeviceCheck(), pytest.raises(RuntimeError, match="generator on cpu"):
        torch.rand(va.shape, generator=gen, device=va.device)


def test_token_mask_with_a_cpu_generator_and_tensors_elsewhere():
    gen = torch.Generator().manual_seed(0)
    va = torch.rand(3, 7).to("meta")
    mask = torch.ones(3, 7).to("meta")
    with GeneratorDeviceCheck():
        keep = A.va_token_mask(va, mask, which="random", frac=0.2, generator=gen)
    assert keep.device.type == "meta" and keep.shape == (3, 7)


def test_keyed_sampler_uniforms_follow_the_logits_device():
    uniforms = RowUniforms(torch.tensor([11, 12, 13]), steps=4, device=torch.device("meta"))
    with GeneratorDeviceCheck():
        picked = uniforms.pick(torch.randn(3, 50).to("meta"), 0)
    assert picked.device.type == "meta" and picked.shape == (3, 1)


def test_trainer_steps_draw_on_their_generators_device(tmp_path, tiny_qwen2vl_dir, tiny_qwen25vl_dir):
    """A VA-OPD step with the token-mask ablation and keyed sampling, every random draw checked."""
    from vlm_opd.config import config_from_dict
    from vlm_opd.train import trainer

    cfg = config_from_dict({
        "method": "va_opd", "output_dir": str(tmp_path / "run"),
        "student": {"path": str(tiny_qwen2vl_dir)}, "teacher": {"path": str(tiny_qwen25vl_dir)},
        "data": {"train": "synthetic:4"}, "rollout": {"k": 2, "max_new_tokens": 6},
        "token_mask": {"which": "bottom", "frac": 0.2}, "prompts_per_step": 2, "steps": 1,
        "eval": {"every": 0},
    })
    with GeneratorDeviceCheck():
        trainer.train(cfg, progress=False)
