"""LoRA students: their weights with the adapters merged, without touching the model.

Used to push weights into a vLLM engine after every step and to write `final/` (one tensor at a time,
so a merged copy of the whole model never exists on the accelerator).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def merged_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(checkpoint name, tensor) of a model's current weights, LoRA merged out of place.

    For a peft model the names are the base model's (`.base_layer` dropped, adapter tensors skipped)
    and each adapted weight is `W + delta` with peft's own `get_delta_weight`, computed in float32 and
    cast back to W's dtype. The model is not modified: merging into the module and unmerging after
    (TRL's `_move_model_to_vllm`, huggingface/trl trl/trainer/grpo_trainer.py) would round the base
    weights twice per step in bf16 and let them drift over a run.
    """
    if not (hasattr(model, "get_base_model") and hasattr(model, "peft_config")):
        for name, param in model.named_parameters():
            yield name, param.detach()
        return
    base = model.get_base_model()
    deltas: dict[str, torch.Tensor] = {}
    for mod_name, module in base.named_modules():
        if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight") and hasattr(module, "lora_A"):
            if getattr(module, "merged", False):
                raise RuntimeError(f"LoRA merge: LoRA layer {mod_name} is merged into its base weight; unmerge it")
            active = [a for a in module.active_adapters if a in module.lora_A]
            if active:
                deltas[f"{mod_name}.weight"] = sum(module.get_delta_weight(a).float() for a in active)
    for name, param in base.named_parameters():
        if "lora_" in name:
            continue
        if ".modules_to_save." in name or ".original_module." in name:
            raise NotImplementedError(f"LoRA merge: LoRA modules_to_save ({name}) are not synced to vLLM")
        name = name.replace(".base_layer", "")
        weight = param.detach()
        if name in deltas:
            weight = (weight.float() + deltas.pop(name)).to(weight.dtype)
        yield name, weight
    if deltas:
        raise RuntimeError(f"LoRA merge: LoRA deltas without a base weight: {sorted(deltas)[:3]}")
