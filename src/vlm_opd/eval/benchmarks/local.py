"""a local dataset in the training schema: loader, prompt and scoring rule."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlm_opd.data.example import IMAGE_PLACEHOLDER, Example
from vlm_opd.errors import ConfigError, DataError
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    blank,
    gold_letter,
    letters_of,
    parse_list_field,
)
from vlm_opd.eval.io import load_image
from vlm_opd.eval.scoring import (
    score_choice,
    score_math,
)


class LocalBenchmark(Benchmark):
    """Any dataset in the training schema: JSONL / JSON / parquet rows with problem, images (list of
    paths relative to the file, or image structs), answer, and optionally id and options. Scored like
    `accuracy_reward`: option letters when `options` is given, else math-verify."""

    name = "local"
    title = "Local"
    group = "Local"
    hub_path = None

    def __init__(self, source=None, prompt_suffix=None):
        if source in (None, ""):
            raise ConfigError("the local benchmark needs a path: 'local:/path/to/data.jsonl'")
        super().__init__(source, prompt_suffix)
        self.title = f"local:{Path(source).name}"

    def to_example(self, row, index, base):
        w = self.where(index, row, "id")
        problem = str(self.require(row, "problem", w))
        answer = str(self.require(row, "answer", w)).strip()
        raw_images = row.get("images", row.get("image"))
        if blank(raw_images):
            raise DataError(f"{w}: no images (field 'images' is missing or empty)")
        raw_images = raw_images if isinstance(raw_images, list) else [raw_images]
        images = [load_image(v, base, f"{w} field 'images'[{i}]", self.image_dirs) for i, v in enumerate(raw_images)]
        n_markers = problem.count(IMAGE_PLACEHOLDER)
        if n_markers and n_markers != len(images):
            raise DataError(f"{w}: problem has {n_markers} {IMAGE_PLACEHOLDER} markers but {len(images)} images")
        meta: dict[str, Any] = {}
        if not blank(row.get("options")):
            options = row["options"]
            if not isinstance(options, Mapping):
                options = [str(o) for o in parse_list_field(options, w, "options")]
            answer = gold_letter(answer, options, w)
            meta["options"] = options
        return Example(problem=problem, images=images, answer=answer, id=str(row.get("id", index)), meta=meta)

    def score(self, completion, example, judge=None, extraction=None):
        self._no_extraction(extraction)
        if example.meta.get("options"):
            return score_choice(completion, example.meta["options"], example.answer)
        return score_math(completion, example.answer)

    def wrong_completion(self, example):
        if example.meta.get("options"):
            wrong = next(l for l in letters_of(example.meta["options"]) if l != example.answer)
            return f"\\boxed{{{wrong}}}"
        return super().wrong_completion(example)
