"""The evaluation benchmarks: one module per benchmark (loader, prompt, official scorer), a registry.

Each benchmark is a small class (see `base.Benchmark`). `load()` reads the official schema from a local
copy (a directory, or a .parquet/.jsonl/.json file) or from the hub name users would pass, and turns
every row into an `Example` whose `problem` is the prompt of the benchmark's protocol (with `<image>`
markers where the release places images). `score()` applies the benchmark's official scoring rule to
one completion, and `run_metrics()` aggregates one run (one completion per item) into the protocol's
metrics, in percent.

Spec strings name a benchmark and optionally its source: "mathvista" (hub), "mathvista:/data/MathVista"
(local copy), "local:/data/my_eval.jsonl" (training schema: problem / images / answer).
"""

from __future__ import annotations

import re
from difflib import get_close_matches
from typing import Any

from vlm_opd.errors import ConfigError
from vlm_opd.eval.benchmarks.ai2d import AI2D
from vlm_opd.eval.benchmarks.base import GROUPS, Benchmark, parse_inline_options
from vlm_opd.eval.benchmarks.hallusionbench import HallusionBench
from vlm_opd.eval.benchmarks.local import LocalBenchmark
from vlm_opd.eval.benchmarks.logicvista import LogicVista
from vlm_opd.eval.benchmarks.mathverse import MathVerse
from vlm_opd.eval.benchmarks.mathvision import MathVision
from vlm_opd.eval.benchmarks.mathvista import MathVista
from vlm_opd.eval.benchmarks.mmmu import MMMU
from vlm_opd.eval.benchmarks.mmmu_pro import MMMUPro, MMMUProVision
from vlm_opd.eval.benchmarks.mmstar import MMStar
from vlm_opd.eval.benchmarks.ocrbench import OCRBench
from vlm_opd.eval.benchmarks.wemath import WeMath

BENCHMARKS: dict[str, type[Benchmark]] = {
    cls.name: cls
    for cls in (WeMath, MathVista, MathVerse, HallusionBench, AI2D, MMMU, MMStar, OCRBench,
                MMMUPro, MMMUProVision, MathVision, LogicVista, LocalBenchmark)
}

# The order of VA-OPD's Table 1, then VOLD's benchmarks.
TABLE_ORDER = ["wemath", "mathvista", "mathverse", "hallusionbench", "ai2d", "mmmu", "mmstar", "ocrbench",
               "mmmu_pro", "mmmu_pro_vision", "mathvision", "logicvista"]

PAPER_SUITES = {
    "va-opd": ["wemath", "mathvista", "mathverse", "hallusionbench", "ai2d", "mmmu", "mmstar", "ocrbench"],
    "vold": ["mmmu_pro_vision", "mathvision", "mathvista", "logicvista"],
}


def _canonical(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def get_benchmark(spec: str, **options: Any) -> Benchmark:
    """A configured benchmark from a spec string "name" or "name:/local/path".

    `options` go to the benchmark's constructor (`prompt_suffix`, MathVerse's `prompt_field`,
    MMMU-Pro's `mode`). Unknown names raise ConfigError listing the known ones.
    """
    name, sep, source = spec.partition(":")
    key = _canonical(name)
    if key not in BENCHMARKS:
        close = get_close_matches(key, list(BENCHMARKS), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown benchmark {name!r}. Known benchmarks: {', '.join(BENCHMARKS)}.{hint}")
    if sep and not source.strip():
        raise ConfigError(f"benchmark spec {spec!r} has an empty path after ':'")
    try:
        return BENCHMARKS[key](source.strip() or None, **options)
    except TypeError as err:
        raise ConfigError(f"benchmark {key!r}: bad option ({err})") from None


__all__ = [
    "AI2D", "BENCHMARKS", "GROUPS", "MMMU", "PAPER_SUITES", "TABLE_ORDER", "Benchmark", "HallusionBench",
    "LocalBenchmark", "LogicVista", "MMMUPro", "MMMUProVision", "MMStar", "MathVerse", "MathVision",
    "MathVista", "OCRBench", "WeMath", "get_benchmark", "parse_inline_options",
]
