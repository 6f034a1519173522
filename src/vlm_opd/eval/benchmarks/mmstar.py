"""MMStar: loader, prompt and the official scoring rule.

MMStar's authors evaluate through VLMEvalKit. Its rule ("exact_matching" policy, no LLM) is
`can_infer` in open-compass/VLMEvalKit `vlmeval/utils/matching_util.py` at commit
18fc37a5337e31eec9c104887728ad14e82a6a85 (`can_infer_option`, then `can_infer_text`), called from
`extract_answer_from_item` in `vlmeval/dataset/utils/multiple_choice.py`, which gives 'Z' (never
right) when nothing can be inferred. Written here from reading it.

Quirks reproduced:
- the characters . ( ) [ ] , : ; ! * # { } become spaces, then the output is split on whitespace;
  an option letter counts only as a whole token, upper case ("**B**", "(B)", "Answer:\\nC" and
  "The answer is B." all read as the letter; "(b)" and "b" do not);
- exactly one distinct option letter among the tokens decides, however often it repeats; two
  different letters ("A or B") read as no letter;
- the article trap: "A cat." with options A "a cup" / B "a cat" reads A (the token "A");
- no letter and a lone "Z" token, or one of VLMEvalKit's refusal phrases, gives 'Z' (unparsed);
- otherwise the option texts, lower-cased, are searched as substrings of the lower-cased output;
  exactly one option text found decides ("a cat" -> B), otherwise unparsed;
- the "Failed to obtain answer via API" marker skips the letter step only.
VLMEvalKit's optional LLM matching for outputs the rule cannot read is not run (the rule tag stays
"official": that policy is VLMEvalKit's exact-matching mode).

Prompt: lmms-eval's MMStar task (`lmms_eval/tasks/mmstar/utils.py` a455120a8ebb7ba325b5b81de28bdf1da9356597,
`mmstar.yaml` b5ba906b0973de6024d585d3ef03454b6d50b6ba): the released question (which holds its
options, "Options: A: ..., B: ...") stripped, then "\\nAnswer with the option's letter from the given
choices directly" -- without a final period, as in the yaml. VLMEvalKit builds its own prompt from its
TSV ("Question: ...\\nOptions:\\nA. ...\\nPlease select the correct answer from the options above. \\n",
`vlmeval/dataset/image_mcq.py` 9ede1af0143acf7d4c2e41858ffe1624c5f42bf8) from a question column this
index does not show, so it is not reproduced. lmms-eval also scores MMStar differently (first
character of the output, l2-category average); that rule is not the one used here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    parse_inline_options,
)
from vlm_opd.eval.scoring import OFFICIAL, ItemScore

MMSTAR_POST_PROMPT = "\nAnswer with the option's letter from the given choices directly"

_REJECT = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)


def can_infer_option(answer: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit `can_infer_option`: an option letter, 'Z' (refusal), or None."""
    if "Failed to obtain answer via API" in answer:
        return None
    if any(phrase in answer for phrase in _REJECT):
        return "Z"
    mod = answer
    for c in ".()[],:;!*#{}":
        mod = mod.replace(c, " ")
    splits = [x.strip() for x in mod.split()]
    count = sum(1 for c in choices if c in splits)
    if count == 1:
        for ch in choices:
            if ch in splits:
                return ch
    elif count == 0 and sum(1 for c in ("Z", "") if c in splits) == 1:
        return "Z"
    return None


def can_infer_text(answer: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit `can_infer_text`: the only option whose lower-cased text occurs in the output, or None."""
    answer = answer.lower()
    cands = [k for k, text in choices.items() if str(text).lower() in answer]
    return cands[0] if len(cands) == 1 else None


def can_infer(answer: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit `can_infer`: the letter step, then the text step."""
    answer = str(answer)
    return can_infer_option(answer, choices) or can_infer_text(answer, choices)


def mmstar_score(completion: str, options: Mapping[str, str], gold: str) -> ItemScore:
    """MMStar's verdict: the letter `can_infer` reads must equal `gold`; nothing or 'Z' is unparsed."""
    letter = can_infer(completion or "", options)
    if letter is None or letter == "Z":
        return ItemScore(0.0, letter, False, OFFICIAL)
    return ItemScore(float(letter == gold), letter, True, OFFICIAL)


class MMStar(Benchmark):
    """MMStar (val). Schema: index, question (with "Options: A: ..., B: ..."), image, answer (letter),
    category, l2_category, meta_info. Prompt: the question as released (options inline) and "Answer
    with the option's letter from the given choices directly" (lmms-eval's MMStar post-prompt).
    Scoring: VLMEvalKit's `can_infer` (module docstring). Metrics: accuracy and per-category accuracy."""

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
            problem=f"{question}{MMSTAR_POST_PROMPT}", images=[image], answer=answer, id=str(row.get("index", index)),
            meta={"options": options, "category": row.get("category"), "l2_category": row.get("l2_category")},
        )

    def score(self, completion, example, judge=None, extraction=None):
        self._no_extraction(extraction)
        return mmstar_score(completion, example.meta["options"], example.answer)

    def run_metrics(self, examples, scores):
        metrics, counts = super().run_metrics(examples, scores)
        by_cat: dict[str, list[float]] = defaultdict(list)
        for ex, s in zip(examples, scores):
            if ex.meta.get("category"):
                by_cat[str(ex.meta["category"])].append(s.score)
        for cat, vals in sorted(by_cat.items()):
            metrics[f"acc/{cat}"] = 100.0 * sum(vals) / len(vals)
        return metrics, counts

    def reference_completion(self, example):
        return f"Comparing the options with the image.\nAnswer: {example.answer}"

    def wrong_completion(self, example):
        wrong = next(l for l in example.meta["options"] if l != example.answer)
        return f"Comparing the options with the image.\nAnswer: {wrong}"
