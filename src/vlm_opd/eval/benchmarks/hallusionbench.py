"""HallusionBench: loader, prompt and scoring rule."""

from __future__ import annotations

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    blank,
)
from vlm_opd.eval.scoring import (
    ItemScore,
    extract_yes_no,
    hallusion_metrics,
)


class HallusionBench(Benchmark):
    """HallusionBench. Schema: category (VD / VS), subcategory, visual_input, set_id, figure_id,
    question_id, question, gt_answer ("1" yes / "0" no), gt_answer_details, filename / image.
    Rule scoring reads yes / no (`scoring.extract_yes_no`); as in the official script, a VS question
    without a figure counts as correct when the answer is unclear. Metrics: aAcc, fAcc, qAcc."""

    name = "hallusionbench"
    title = "HallusionBench"
    group = "Visual"
    hub_path = "lmms-lab/HallusionBench"
    hub_split = "image"

    def to_example(self, row, index, base):
        w = self.where(index, row)
        keys = {}
        for field in ("category", "subcategory", "set_id", "figure_id", "question_id"):
            value = row.get(field)
            if value is None or str(value).strip() == "":
                raise DataError(f"{w}: missing required field {field!r} (fields present: {', '.join(sorted(row))})")
            keys[field] = str(value)
        row_id = "_".join(keys[f] for f in ("category", "subcategory", "set_id", "figure_id", "question_id"))
        w = f"{self.title} row {index} ({row_id})"
        question = str(self.require(row, "question", w)).strip()
        gt = str(self.require(row, "gt_answer", w)).strip().lower()
        gold = {"1": "yes", "0": "no", "yes": "yes", "no": "no"}.get(gt)
        if gold is None:
            raise DataError(f"{w}: gt_answer must be '1' (yes) or '0' (no), got {row.get('gt_answer')!r}")
        no_visual = str(row.get("visual_input", "")).strip() == "0"
        images = [] if no_visual and blank(row.get("image")) and blank(row.get("filename")) else [
            self.image(row, ("image", "filename"), base, w)
        ]
        return Example(
            problem=question, images=images, answer=gold, id=row_id,
            meta={**keys, "visual_input": str(row.get("visual_input", "")), "gt_answer_details": row.get("gt_answer_details")},
        )

    def score(self, completion, example, judge=None):
        said = extract_yes_no(completion)
        if said is None:
            # Official: a VS question asked without its figure may be answered "unclear".
            lenient = example.meta["category"] == "VS" and example.meta["figure_id"] == "0"
            return ItemScore(1.0 if lenient else 0.0, None, False)
        return ItemScore(float(said == example.answer), said, True)

    def run_metrics(self, examples, scores):
        return hallusion_metrics([e.meta for e in examples], [s.score for s in scores]), {}

    def headline(self, metrics):
        return "aAcc"

    def reference_completion(self, example):
        return f"{example.answer.capitalize()}, judging from the image."

    def wrong_completion(self, example):
        return f"{'No' if example.answer == 'yes' else 'Yes'}, judging from the image."
