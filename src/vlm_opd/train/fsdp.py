"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for the student, the teacher and the GRPO reference.

`parallel.strategy: fsdp` shards every model over the processes of the launch (the same
`accelerate launch` / `torchrun` line as DDP). accelerate's own FSDP plugin is not used: with
`use_cpu` it silently ran DDP, and the trainer needs to own three things FSDP does not do by itself:

- **Units.** One FSDP unit per text decoder layer; the root unit holds the rest (embeddings, final
  norm, lm_head and the vision tower). Every process must make the same collective calls in the
  same order. Decoder layers run in every forward; the vision tower runs only when a micro-batch
  has images, which can differ between processes (a text-only row), so it stays in the root unit,
  gathered once per forward like the embeddings.
- **The lm_head outside the forward.** The chunked divergences read the lm_head weight directly
  instead of calling the head. FSDP2 keeps the root unit gathered from a forward until the end of
  the following backward (it does not reshard the root after forward), so the weight read after
  the model's own forward is the full tensor and its gradient is reduce-scattered by the root's
  post-backward like any other. Frozen models (no backward) stay gathered after a forward until
  `release` reshards them.
- **Sampling.** Rollouts end at different lengths on different processes, so a generation driven
  through the sharded model would make different numbers of all-gathers per process and hang.
  `gathered(model)` all-gathers every unit once and turns resharding off while sampling: no
  collective runs during generation, at the cost of one whole copy of the model (in the
  mixed-precision compute dtype) per process for that time; every unit is resharded afterwards.

A LoRA student is not sharded (the trainer keeps it whole on every process, DDP-style: its adapters are
small and its final/ is merged from them); its teacher and reference are.

Checkpoints are sharded (`torch.distributed.checkpoint`: every process writes its own shards, and
a checkpoint loads on any number of processes); `final/` is one consolidated model directory.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from vlm_opd.errors import ConfigError, ModelError


def is_sharded(model: nn.Module) -> bool:
    """True for a model that `shard_model` wrapped (an FSDP2 root module)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The text decoder layers of a Qwen-VL / Qwen3 model (LoRA-wrapped or not), in order."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    get = getattr(base, "get_decoder", None)
    decoder = get() if callable(get) else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ModelError(f"parallel.strategy=fsdp: {type(base).__name__} exposes no decoder layers "
                         "(get_decoder().layers) to shard; use parallel.strategy=ddp")
    return list(layers)


def _mesh(device: torch.device):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (dist.get_world_size(),))


def shard_model(model: nn.Module, device: torch.device, *, param_dtype: torch.dtype | None = None,
                offload: bool = False, upcast: bool = False) -> nn.Module:
    """Shard `model` in place: one FSDP unit per decoder layer, the root unit for the rest.

    Args:
        model: the model on the CPU or on `device` (parameters are moved to `device` one at a time,
            so the whole unsharded model never sits on the accelerator).
        device: this process's device (the mesh's device type).
        param_dtype: compute dtype of the gathered parameters (bf16 with `mixed_precision: bf16`);
            gradients are reduced in float32 and the sharded master weights keep their own dtype.
            None computes in the parameters' dtype.
        offload: keep the shards in CPU memory and gather to `device` for each use (frozen models).
        upcast: make the parameters float32 (the student's master weights) one unit at a time, just before
            sharding it, so a whole float32 copy of the model never exists in one process.
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    # The root's output holds views (hidden_states); FSDP2 warns that an in-place op on one would skip its
    # gather hook. Nothing here writes into model outputs in place, and the 2-process tests compare the
    # gradients with a one-process run's, which a skipped gather would break.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor", category=UserWarning)

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    kwargs = {"mesh": _mesh(device), "mp_policy": mp,
              "offload_policy": CPUOffloadPolicy(pin_memory=device.type == "cuda") if offload else OffloadPolicy()}
    layers = decoder_layers(model)
    for layer in layers:
        if upcast:
            layer.float()
        fully_shard(layer, **kwargs)
    if upcast:  # the root unit's own parameters and buffers (the layers' are float32 by now), as model.float()
        in_layers = {id(m) for layer in layers for m in layer.modules()}
        for module in model.modules():
            if id(module) in in_layers:
                continue
            for p in module.parameters(recurse=False):
                if p.is_floating_point() and p.dtype != torch.float32:
                    p.data = p.data.float()
            for name, b in module.named_buffers(recurse=False):
                if b.is_floating_point() and b.dtype != torch.float32:
                    module._buffers[name] = b.float()
    fully_shard(model, **kwargs)
    return model


def _units(model: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def _default_resharding(model: nn.Module) -> None:
    """FSDP2's defaults: every unit reshards after forward except the root (kept for the backward)."""
    model.set_reshard_after_forward(True, recurse=True)
    model.set_reshard_after_forward(False, recurse=False)


def release(model: nn.Module) -> None:
    """Free the gathered parameters of every unit (a frozen model after scoring). No-op if not sharded."""
    if is_sharded(model):
        for unit in _units(model):
            unit.reshard()


@contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Every unit of a sharded `model` gathered, with no collective inside (see module doc: sampling).

    All processes must enter and leave together (the gathers are collectives); in between, each one
    may run any number of forward passes. A model that is not sharded passes through unchanged.
    """
    if not is_sharded(model):
        yield
        return
    units = _units(model)
    model.set_reshard_after_forward(False, recurse=True)
    try:
        for unit in units:
            unit.unshard()
        yield
    finally:
        _default_resharding(model)
        for unit in units:
            unit.reshard()


def clip_grad_norm(params: list[nn.Parameter], max_norm: float | None) -> float:
    """Global gradient norm over sharded gradients (all processes), clipped to `max_norm` if given."""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    if max_norm is not None:
        torch.nn.utils.clip_grads_with_norm_([p for p in params if p.grad is not None], max_norm, norm)
    return float(norm)


def local_shard_fraction(model: nn.Module) -> dict[str, float]:
    """Per parameter name: elements held by this process / elements of the whole parameter."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, p in model.named_parameters():
        if isinstance(p, DTensor):
            out[name] = p.to_local().numel() / max(p.numel(), 1)
    return out


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on the CPU of the main process (empty on the others). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Every process writes its shards of the model and optimizer state into `directory`. Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(directory))


def load_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Load `save_sharded`'s state into the sharded model and optimizer (any number of processes)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (directory / ".metadata").is_file():
        raise ConfigError(f"resume: {directory.parent} holds no sharded (FSDP) state; it was written with "
                          "parallel.strategy=ddp: resume it with that strategy")
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def init_single_process_group(device: torch.device) -> bool:
    """A one-process group (so FSDP runs, and its checkpoints match a multi-process run's format)
    when the launch started no process group. Returns True if it created one."""
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return True


def close_process_group() -> None:
    """Every process leaves together and tears the process group down before the interpreter exits.

    Left to interpreter shutdown, a process could abort ("terminate called without an active exception",
    SIGABRT, seen intermittently after FSDP runs and the FSDP sampling benchmark on 2 CPU processes):
    gloo work objects still referenced from the models' FSDP state are then destroyed while Python is being
    torn down. So: collect what the caller has already dropped (the models), meet at a barrier, destroy."""
    import gc

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
