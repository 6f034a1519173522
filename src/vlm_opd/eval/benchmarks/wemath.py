"""We-Math: loader, prompt and scoring rule."""

from __future__ import annotations

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    ChoiceBenchmark,
    gold_letter,
    parse_inline_options,
)
from vlm_opd.eval.scoring import (
    wemath_four_dimensional,
)


class WeMath(ChoiceBenchmark):
    """We-Math (testmini): multiple choice; accuracy and the official four-dimensional score.

    Schema: ID, split, knowledge concept, question, option ("A. ...; B. ..."), answer (letter),
    image_path (image or relative path), key ("2steps_1", "2steps_multi", ...), question number.
    The four-dimensional metrics group the 2- and 3-step problems by ID (see
    `scoring.wemath_four_dimensional`); the headline is the strict score when groups exist.
    """

    name = "wemath"
    title = "WeMath"
    group = "Math"
    hub_path = "We-Math/We-Math"
    hub_split = "testmini"

    def to_example(self, row, index, base):
        w = self.where(index, row, "ID")
        question = str(self.require(row, "question", w)).strip()
        option_text = str(self.require(row, "option", w))
        options = parse_inline_options(option_text)
        if not options:
            raise DataError(
                f"{w}: cannot read options from field 'option' ({option_text!r:.80}); expected 'A. ...; B. ...'"
            )
        answer = gold_letter(self.require(row, "answer", w), options, w)
        key = str(row.get("key") or "")
        prompt = (
            "Solve the multiple-choice math question about the image. Briefly explain your reasoning, "
            "then give the letter of the correct option on the last line as 'Answer: <letter>'.\n"
            f"Question: {question}\nOptions: {option_text.strip()}"
        )
        image = self.image(row, ("image_path", "image", "decoded_image"), base, w)
        row_id = f"{self.require(row, 'ID', w)}@{key}" if key else str(self.require(row, "ID", w))
        return Example(
            problem=prompt, images=[image], answer=answer, id=row_id,
            meta={"options": options, "ID": str(row.get("ID")), "key": key,
                  "knowledge_concept": row.get("knowledge concept")},
        )

    def run_metrics(self, examples, scores):
        metrics, counts = super().run_metrics(examples, scores)
        four, group_counts = wemath_four_dimensional([e.meta for e in examples], [s.score for s in scores])
        metrics.update(four)
        counts.update(group_counts)
        return metrics, counts

    def headline(self, metrics):
        return "score_strict" if "score_strict" in metrics else "accuracy"
