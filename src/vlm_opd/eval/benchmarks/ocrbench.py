"""OCRBench: loader, prompt and scoring rule."""

from __future__ import annotations

from collections import defaultdict

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    blank,
)
from vlm_opd.eval.scoring import (
    ItemScore,
    ocrbench_match,
)


class OCRBench(Benchmark):
    """OCRBench. Schema (echo840/OCRBench): dataset, question, question_type, answer (list), image;
    or the official OCRBench.json: dataset_name, id, image_path, question, answers, type.
    Scoring: OCRBench's substring rule. Metrics: accuracy in percent; counts["points"] is the
    official score (one point per item, out of 1000 on the full benchmark)."""

    name = "ocrbench"
    title = "OCRBench"
    group = "Visual"
    hub_path = "echo840/OCRBench"
    hub_split = "test"
    image_dirs = ("OCRBench_Images", "images")

    def to_example(self, row, index, base):
        w = self.where(index, row, "id")
        question = str(self.require(row, "question", w)).strip()
        answers = row.get("answer", row.get("answers"))
        if blank(answers):
            raise DataError(f"{w}: missing required field 'answer' (or 'answers')")
        answers = [answers] if isinstance(answers, str) else [str(a) for a in answers]
        dataset_name = str(row.get("dataset") or row.get("dataset_name") or "")
        qtype = str(row.get("question_type") or row.get("type") or "")
        image = self.image(row, ("image", "image_path"), base, w)
        return Example(
            problem=question, images=[image], answer=answers[0], id=str(row.get("id", index)),
            meta={"answers": answers, "dataset": dataset_name, "question_type": qtype},
        )

    def score(self, completion, example, judge=None):
        if not completion or not completion.strip():
            return ItemScore(0.0, None, False)
        ok = ocrbench_match(completion, example.meta["answers"], example.meta["dataset"])
        return ItemScore(float(ok), completion.strip()[:200], True)

    def run_metrics(self, examples, scores):
        metrics, _ = super().run_metrics(examples, scores)
        counts = {"points": int(sum(s.score for s in scores)), "items": len(scores)}
        by_type: dict[str, int] = defaultdict(int)
        for ex, s in zip(examples, scores):
            by_type[f"points/{ex.meta['question_type']}"] += int(s.score)
        counts.update(sorted(by_type.items()))
        return metrics, counts

    def reference_completion(self, example):
        return f"The text reads: {example.meta['answers'][0]}"

    def wrong_completion(self, example):
        return "I cannot make it out."
