"""HallusionBench: loader, prompt, the official judge step, the rule fallback and the metrics.

Official protocol (tianyi-lab/HallusionBench `utils.py` at commit
89db6019670011199df6f002bca389f7b592e129, driven by `evaluation.py` at 0daf75393905ee30adc4cac7bca7a1d7ed5f10fa):
- an LLM judge (GPT-4 there) reads the question, the reference answer (`gt_answer_details`) and the
  prediction with the prompt of `evaluate_by_chatgpt` (reproduced verbatim in `hallusion_judge_prompt`);
  its reply is "incorrect" -> 0 if it contains "incorrect" (case-insensitive, checked first), else
  "correct" -> 1 if it contains "correct", else 2 (unclear);
- `assign_correctness`: a VS question asked without its figure (figure_id 0) is right when the
  verdict is 1 or 2 (not knowing is fine without the figure); every other question only when it is 1;
- aAcc = right questions / all questions (`get_eval_all`); fAcc = figures (category, subcategory,
  set_id, figure_id) with every question right / figures, VS figure 0 left out (`get_eval_fig`);
  qAcc = questions (category, subcategory, set_id, question_id) right on every figure / such
  questions (`get_eval_pair_all`).

With a judge configured (`--judge-url/--judge-model`) that step runs and items are tagged
"judge:<model>". Without one, the yes/no rule of VLMEvalKit stands in: `YOrN_Extraction`
(open-compass/VLMEvalKit `vlmeval/dataset/utils/yorn.py` at 0c7163c9c71cff1758ff1c101385e8ce80d8713a,
with `process_punctuation` from `vlmeval/smp/misc.py` at 4e85dcd302cc5f96c01ca6777d38b41a0ff1aebf),
scored as VLMEvalKit's `ImageYORNDataset.evaluate` does in its exact-matching mode
(`vlmeval/dataset/image_yorn.py` 85e10b3387c58613823a18912b18eddc6e70a116: `score = answer == extracted`;
"Unknown" is wrong, also on VS figure-0 questions; its optional LLM re-reading of Unknowns is not run).
That is VLMEvalKit's rule path, not HallusionBench's protocol (which needs the LLM judge), so these
items are tagged OFFLINE ("offline-rule"): the papers' "official protocol" numbers need the judge.
The metrics are always the official ones above (VLMEvalKit's `Hallusion_rating` groups figures
differently; its fAcc/qAcc are not reproduced).

`YOrN_Extraction` quirks reproduced: lower-case; punctuation handled by `process_punctuation` (each of
; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? ! is deleted if it appears next to a space anywhere in the
text, or if the text holds a digit-comma-digit, else replaced by a space; then periods not next to a
digit are deleted, at most 32 of them, because `re.UNICODE` is passed as the count); split on
whitespace; "yes" without "no" -> Yes, "no" without "yes" -> No, anything else Unknown. So "Yes/No" is
Unknown, "**Yes**" is Unknown (asterisks stay), "Yes, it is." is Yes, "No." is No, "yes:" is Unknown.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    blank,
)
from vlm_opd.eval.scoring import OFFLINE, ItemScore

_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP = re.compile(r"(?<!\d)\.(?!\d)")


def process_punctuation(in_text: str) -> str:
    """VLMEvalKit `process_punctuation` (vlmeval/smp/misc.py), quirks included."""
    out = in_text
    for p in _PUNCT:
        # The test looks at the ORIGINAL text; a digit-comma-digit anywhere deletes every mark.
        if (p + " " in in_text or " " + p in in_text) or _COMMA_STRIP.search(in_text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # Official: periodStrip.sub('', outText, re.UNICODE) -- the flag lands in `count` (= 32).
    return _PERIOD_STRIP.sub("", out, count=int(re.UNICODE))


def yorn_extraction(output: str) -> str:
    """VLMEvalKit `YOrN_Extraction`: 'Yes', 'No' or 'Unknown'."""
    words = process_punctuation(output.lower()).split()
    if "yes" in words and "no" not in words:
        return "Yes"
    if "yes" not in words and "no" in words:
        return "No"
    return "Unknown"


def hallusion_judge_prompt(question: str, reference: str, prediction: str) -> str:
    """The judge prompt of HallusionBench's `evaluate_by_chatgpt`, character for character."""
    prompt = ("Imagine you are an intelligent teacher. Thoroughly read the question, reference answer and the "
              "prediction answer to ensure a clear understanding of the information provided. Assess the "
              "correctness of the predictions. ")
    prompt += ("If the prediction answer does not conflict with the reference answer, please generate \u201ccorrect\u201d. "
               "If the prediction answer conflict with the reference answer, please generate \u201cincorrect\u201d. "
               "If the prediction answer is unclear about the answer, please generate \"unclear\". \n\n Question:")
    prompt += question
    prompt += "\nReference answer: "
    prompt += reference
    prompt += "\nPrediction answer:"
    prompt += prediction
    prompt += "\nOutput:"
    return prompt


def hallusion_judge_verdict(reply: str) -> int:
    """`evaluate_by_chatgpt`'s reading of the judge: 0 incorrect, 1 correct, 2 unclear."""
    text = reply.lower()
    if "incorrect" in text:
        return 0
    if "correct" in text:
        return 1
    return 2


def hallusion_correct(verdict: int, category: str, figure_id: str) -> bool:
    """`assign_correctness`: VS without figure accepts 'unclear' (2); everything else needs 1."""
    if category == "VS" and int(figure_id) == 0:
        return verdict in (1, 2)
    return verdict == 1


def hallusion_metrics(rows: Sequence[Mapping], correct: Sequence[float]) -> dict[str, float]:
    """HallusionBench aAcc / fAcc / qAcc in percent, for one run (module docstring)."""
    if not rows:
        return {}
    a_acc = 100.0 * sum(1 for c in correct if c) / len(rows)
    figures: dict[tuple, list[float]] = defaultdict(list)
    questions: dict[tuple, list[float]] = defaultdict(list)
    for row, c in zip(rows, correct):
        cat, sub, set_id, fig, q = (str(row.get(k)) for k in ("category", "subcategory", "set_id", "figure_id", "question_id"))
        if not (cat == "VS" and fig == "0"):
            figures[(cat, sub, set_id, fig)].append(c)
        questions[(cat, sub, set_id, q)].append(c)
    out = {"aAcc": a_acc}
    if figures:
        out["fAcc"] = 100.0 * sum(all(v >= 1.0 for v in vals) for vals in figures.values()) / len(figures)
    if questions:
        out["qAcc"] = 100.0 * sum(all(v >= 1.0 for v in vals) for vals in questions.values()) / len(questions)
    return out


class HallusionBench(Benchmark):
    """HallusionBench. Schema: category (VD / VS), subcategory, visual_input, set_id, figure_id,
    question_id, question, gt_answer ("1" yes / "0" no), gt_answer_details, filename / image.
    Prompt: the question alone. Scoring: the official LLM judge when one is configured, else
    VLMEvalKit's yes/no rule tagged OFFLINE (module docstring). Metrics: aAcc, fAcc, qAcc."""

    name = "hallusionbench"
    title = "HallusionBench"
    group = "Visual"
    hub_path = "lmms-lab/HallusionBench"
    hub_split = "image"
    uses_judge = True

    def to_example(self, row, index, base):
        w = self.where(index, row)
        keys = {}
        for field in ("category", "subcategory", "set_id", "figure_id", "question_id"):
            value = row.get(field)
            if value is None or str(value).strip() == "":
                raise DataError(f"{w}: missing required field {field!r} (fields present: {', '.join(sorted(row))})")
            keys[field] = str(value)
        if not keys["figure_id"].strip().isdigit():
            raise DataError(f"{w}: figure_id must be a whole number, got {keys['figure_id']!r}")
        row_id = "_".join(keys[f] for f in ("category", "subcategory", "set_id", "figure_id", "question_id"))
        w = f"{self.title} row {index} ({row_id})"
        question = str(self.require(row, "question", w))
        gt = str(self.require(row, "gt_answer", w)).strip().lower()
        gold = {"1": "yes", "0": "no", "yes": "yes", "no": "no"}.get(gt)
        if gold is None:
            raise DataError(f"{w}: gt_answer must be '1' (yes) or '0' (no), got {row.get('gt_answer')!r}")
        no_visual = str(row.get("visual_input", "")).strip() == "0"
        images = [] if no_visual and blank(row.get("image")) and blank(row.get("filename")) else [
            self.image(row, ("image", "filename"), base, w)
        ]
        details = row.get("gt_answer_details")
        return Example(
            problem=question.strip(), images=images, answer=gold, id=row_id,
            meta={**keys, "visual_input": str(row.get("visual_input", "")), "question": question,
                  "gt_answer_details": None if details is None else str(details), "where": w},
        )

    def score(self, completion, example, judge=None, extraction=None):
        self._no_extraction(extraction)
        completion = completion or ""
        meta = example.meta
        if judge is not None:
            if blank(meta.get("gt_answer_details")):
                raise DataError(f"{meta.get('where', example.id)}: the judge needs 'gt_answer_details' (the reference answer)")
            reply = judge.complete(hallusion_judge_prompt(meta["question"], meta["gt_answer_details"], completion))
            verdict = hallusion_judge_verdict(reply)
            ok = hallusion_correct(verdict, meta["category"], meta["figure_id"])
            label = {0: "incorrect", 1: "correct", 2: "unclear"}[verdict]
            return ItemScore(float(ok), label, verdict != 2, judge.rule)
        said = yorn_extraction(completion)
        if said == "Unknown":
            return ItemScore(0.0, None, False, OFFLINE)
        return ItemScore(float(said.lower() == example.answer), said.lower(), True, OFFLINE)

    def run_metrics(self, examples, scores):
        return hallusion_metrics([e.meta for e in examples], [s.score for s in scores]), {}

    def headline(self, metrics):
        return "aAcc"

    def reference_completion(self, example):
        return f"{example.answer.capitalize()}, judging from the image."

    def wrong_completion(self, example):
        return f"{'No' if example.answer == 'yes' else 'Yes'}, judging from the image."
