"""Two honest ways to check, on the CPU, that a step never builds a `[N, V]` float tensor.

`VocabShapeProbe` (structural): a `TorchDispatchMode` that sees every aten op, forward and backward
(autograd runs above it), and records each output tensor with a dimension of size V. Rows =
numel / V; weight-shaped `[V, H]` tensors (the lm_head, its float32 upcast, its gradient) are
allowed by shape, anything else must have at most `max_rows` rows (the chunk size). A `[N, V]` or
`[B, T, V]` logits tensor, even one freed a moment later, is caught.

`cpu_peak_allocated` (quantitative): runs a function under `torch.profiler` with
`profile_memory=True` and replays the CPU allocator's allocation / free records (every byte torch
allocates through its CPU allocator, including autograd's saved tensors and gradients; not
Python objects, not glibc caching) to find the peak of bytes allocated during the call above what
was allocated before it. Unlike RSS it is exact and deterministic; unlike tracemalloc it sees
torch. It does not see memory allocated outside torch's allocator (e.g. by a BLAS library's
workspace), which is small here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


@dataclass
class VocabTensor:
    op: str
    shape: tuple[int, ...]
    dtype: torch.dtype


class VocabShapeProbe(TorchDispatchMode):
    """Records every op output with a dimension of size `vocab` that is not an allowed shape.

    Args:
        vocab: V (e.g. 151,936).
        max_rows: largest allowed numel / V for tensors that are not in `allowed_shapes`.
        allowed_shapes: exact shapes always allowed (e.g. `(V, H)` for weights and their gradients).

    Attributes:
        violations: offending outputs (op name, shape, dtype), in order.
        max_rows_seen: the largest numel / V among non-allowed outputs with a V dimension.
        seen: count of outputs with a V dimension.
    """

    def __init__(self, vocab: int, max_rows: int, allowed_shapes: Iterable[tuple[int, ...]] = ()):
        super().__init__()
        self.vocab = int(vocab)
        self.max_rows = int(max_rows)
        self.allowed = {tuple(s) for s in allowed_shapes}
        self.violations: list[VocabTensor] = []
        self.max_rows_seen = 0
        self.seen = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and self.vocab in t.shape:
                self.seen += 1
                shape = tuple(t.shape)
                if shape in self.allowed:
                    continue
                rows = t.numel() // self.vocab
                self.max_rows_seen = max(self.max_rows_seen, rows)
                if rows > self.max_rows:
                    self.violations.append(VocabTensor(str(func), shape, t.dtype))
        return out


@dataclass
class PeakMemory:
    """Result of `cpu_peak_allocated`.

    Attributes:
        peak_bytes: highest (bytes allocated - bytes freed) at any moment during the call, counting
            only allocations made during it (frees of older tensors count too, so a call that frees
            its inputs can go below 0).
        end_bytes: the same at the end of the call (what the call left allocated, e.g. gradients).
        largest: the largest single allocations, in bytes, descending (up to 8).
        result: the function's return value.
    """

    peak_bytes: int
    end_bytes: int
    largest: list[int] = field(default_factory=list)
    result: Any = None


def _walk(nodes):
    for n in nodes:
        yield n
        yield from _walk(n.children)


def cpu_peak_allocated(fn: Callable[[], Any]) -> PeakMemory:
    """Run `fn()` and measure the peak of bytes its CPU tensors held (torch's CPU allocator records)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    allocs = [n for n in _walk(prof.profiler.kineto_results.experimental_event_tree())
              if n.tag == _EventType.Allocation and n.extra_fields.device.type == "cpu"]
    allocs.sort(key=lambda n: n.start_time_ns)
    total = peak = 0
    for n in allocs:
        total += n.extra_fields.alloc_size
        peak = max(peak, total)
    largest = sorted((n.extra_fields.alloc_size for n in allocs if n.extra_fields.alloc_size > 0), reverse=True)[:8]
    return PeakMemory(peak_bytes=peak, end_bytes=total, largest=largest, result=result)
