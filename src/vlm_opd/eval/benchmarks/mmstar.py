"""MMStar: loader, prompt and scoring rule."""

from __future__ import annotations

from collections import defaultdict

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    MC_DIRECT,
    ChoiceBenchmark,
    parse_inline_options,
)


class MMStar(ChoiceBenchmark):
    """MMStar (val). Schema: index, question (with "Options: A: ..., B: ..."), image, answer (letter),
    category, l2_category, meta_info. Metrics: accuracy and per-category accuracy (acc/<category>)."""

    name = "mmstar"
    title = "MMStar"
    group = "Visual"
    hub_path = "Lin-Chen/MMStar"
    hub_split = "val"

    def to_example(self, row, index, base):
        w = self.where(index, row, "index")
        question = str(self.require(row, "question", w)).strip()
        options = parse_inline_options(question)
        if not options:
            raise DataError(f"{w}: cannot find the options ('Options: A: ..., B: ...') in the question")
        answer = str(self.require(row, "answer", w)).strip().upper()
        if answer not in options:
            raise DataError(f"{w}: answer {answer!r} is not one of the option letters {', '.join(options)}")
        image = self.image(row, ("image",), base, w)
        return Example(
            problem=f"{question}\n{MC_DIRECT}", images=[image], answer=answer, id=str(row.get("index", index)),
            meta={"options": options, "category": row.get("category"), "l2_category": row.get("l2_category")},
        )

    def run_metrics(self, examples, scores):
        metrics, counts = super().run_metrics(examples, scores)
        by_cat: dict[str, list[float]] = defaultdict(list)
        for ex, s in zip(examples, scores):
            if ex.meta.get("category"):
                by_cat[str(ex.meta["category"])].append(s.score)
        for cat, vals in sorted(by_cat.items()):
            metrics[f"acc/{cat}"] = 100.0 * sum(vals) / len(vals)
        return metrics, counts
