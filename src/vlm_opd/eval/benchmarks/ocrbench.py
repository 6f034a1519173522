"""OCRBench: loader, prompt and the official scoring rule.

Scoring reproduces the block shared by the evaluation scripts of Yuliang-Liu/MultimodalOCR
`OCRBench/scripts/*.py` (read in `qwenvl.py` at commit f5cbec66817b643f732f11cdc7b3a550963b70dc),
written here from reading it: an item is right (one point) when some reference answer is a
substring of the prediction.

Quirks reproduced:
- all datasets but HME100k: both sides lower-cased, stripped, newlines turned into spaces; other
  whitespace is kept ("chel sea" does not contain "chelsea");
- HME100k (handwritten formulas): case kept, both sides stripped and every space and newline
  removed ("x^{2}+1" contains "x ^ { 2 } + 1", "X^{2}+1" does not);
- a reference that is empty after this normalisation is contained in every prediction (right);
- answers may be one string or a list; any one of them suffices;
- nothing else is removed from the prediction: a `<think>` block counts as part of it, as it would in
  the official scripts (which score the decoded output as is);
- the score is points: one per item, out of 1000 on the full benchmark (counts["points"]), with the
  per-type points (counts["points/<type>"]) the official script prints.
The question is sent as released (the official scripts add only model-specific wrappers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    blank,
)
from vlm_opd.eval.scoring import OFFICIAL, ItemScore


def ocrbench_match(prediction: str, answers: Sequence[str] | str, dataset_name: str) -> bool:
    """OCRBench's rule: some reference answer is a substring of the prediction (module docstring)."""
    answers = [answers] if isinstance(answers, str) else list(answers)
    for answer in answers:
        answer = str(answer)
        if dataset_name == "HME100k":
            a = answer.strip().replace("\n", " ").replace(" ", "")
            p = prediction.strip().replace("\n", " ").replace(" ", "")
        else:
            a = answer.lower().strip().replace("\n", " ")
            p = prediction.lower().strip().replace("\n", " ")
        if a in p:
            return True
    return False


class OCRBench(Benchmark):
    """OCRBench. Schema (echo840/OCRBench): dataset, question, question_type, answer (list), image;
    or the official OCRBench.json: dataset_name, id, image_path, question, answers, type.
    Scoring: OCRBench's substring rule (module docstring). Metrics: accuracy in percent;
    counts["points"] is the official score (one point per item, out of 1000 on the full benchmark)."""

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

    def score(self, completion, example, judge=None, extraction=None):
        self._no_extraction(extraction)
        completion = completion or ""
        ok = ocrbench_match(completion, example.meta["answers"], example.meta["dataset"])
        # The official script scores every prediction, empty ones included; "parsed" only flags
        # outputs with nothing in them.
        parsed = bool(completion.strip())
        return ItemScore(float(ok), completion.strip()[:200] if parsed else None, parsed, OFFICIAL)

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
