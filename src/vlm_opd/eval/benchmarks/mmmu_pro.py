"""MMMU-Pro (standard and vision): loader, prompt and the official scoring rule.

Prompts: MMMU-Benchmark/MMMU `mmmu-pro/prompts.yaml` and `mmmu-pro/infer/infer_transformers.py`
(`construct_prompt`: question, "A. ..." option lines, the instruction; the vision setting sends the
instruction alone with the screenshot), commit a76d44bd0a6387e1a578aeb9f183f62f623bd3b7.

Scoring reproduces `mmmu-pro/evaluate.py` at commit a76d44bd0a6387e1a578aeb9f183f62f623bd3b7
(`mmmu_process_results` -> `parse_multi_choice_response`, then `parsed_pred == answer`), written here
from reading it. It is MMMU's multiple-choice parser (see `mmmu.py`) with three differences, all kept:
- first, the text after the LAST "Answer:" (case-sensitive, newlines allowed: "Answer:\\nC" reads C)
  is searched for option letters as plain substrings; exactly one distinct letter present decides
  ("Answer: B. Dog" contains B and D, so it falls through to the rest of the rule);
- the bare-letter candidates are "X " (no space required before the letter: "DNA " counts as A);
- then "X." candidates, before the option-text fallback.
Where the official code calls `random.choice`, the item counts as wrong and unparsed.
"""

from __future__ import annotations

from vlm_opd.data.example import Example
from vlm_opd.errors import ConfigError, DataError
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    gold_letter,
    letters_block,
    letters_of,
    parse_list_field,
)
from vlm_opd.eval.benchmarks.mmmu import mmmu_images, mmmu_parse_multi_choice
from vlm_opd.eval.scoring import OFFICIAL, ItemScore

MMMU_PRO_PROMPTS = {
    "cot": {
        "standard": "Answer the preceding multiple choice question. The last line of your response should be of the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of options. Think step by step before answering.",
        "vision": "Write out the multiple-choice question in the image and then solve it. The last line of your response should be of the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of options. Think step by step before answering.",
    },
    "direct": {
        "standard": "Answer with the option letter from the given choices directly.",
        "vision": "Answer with the option letter from the given choices directly. The last line of your response should be of the following format: 'Answer: $LETTER' (without quotes) where LETTER is one of options.",
    },
}


def mmmu_pro_score(completion: str, options, gold: str) -> ItemScore:
    """MMMU-Pro's verdict for one output: the letter `parse_multi_choice_response` reads must equal `gold`."""
    letter = mmmu_parse_multi_choice(completion or "", options, pro=True)
    return ItemScore(float(letter is not None and letter == gold), letter, letter is not None, OFFICIAL)


class MMMUPro(Benchmark):
    """MMMU-Pro, "standard (10 options)" config. Schema: id, question, options (string form of a list),
    answer (letter), image_1 .. image_7, subject. Prompt: MMMU-Pro's (options as "A. ...") with its CoT
    instruction by default (`mode="direct"` for the direct one). Scoring: `mmmu-pro/evaluate.py`
    (module docstring)."""

    name = "mmmu_pro"
    title = "MMMU-Pro"
    group = "VOLD"
    hub_path = "MMMU/MMMU_Pro"
    hub_config = "standard (10 options)"
    hub_split = "test"
    variant = "standard"

    def __init__(self, source=None, prompt_suffix=None, mode: str = "cot"):
        super().__init__(source, prompt_suffix)
        if mode not in MMMU_PRO_PROMPTS:
            raise ConfigError(f"{self.title} mode must be 'cot' or 'direct', got {mode!r}")
        self.mode = mode

    def _options(self, row, w) -> list[str]:
        options = [str(o) for o in parse_list_field(self.require(row, "options", w), w, "options")]
        if len(options) < 2:
            raise DataError(f"{w}: needs at least two options")
        return options

    def to_example(self, row, index, base):
        w = self.where(index, row, "id")
        question = str(self.require(row, "question", w)).strip()
        options = self._options(row, w)
        answer = gold_letter(self.require(row, "answer", w), options, w)
        text = f"{question}\n{letters_block(options, 'dot')}\n{MMMU_PRO_PROMPTS[self.mode]['standard']}"
        text, images = mmmu_images(text, row, base, w, self)
        return Example(problem=text, images=images, answer=answer, id=str(row.get("id") or index),
                       meta={"options": options, "subject": row.get("subject")})

    def score(self, completion, example, judge=None, extraction=None):
        self._no_extraction(extraction)
        return mmmu_pro_score(completion, example.meta["options"], example.answer)

    def reference_completion(self, example):
        return f"Comparing the options with the image.\nAnswer: {example.answer}"

    def wrong_completion(self, example):
        wrong = next(l for l in letters_of(example.meta["options"]) if l != example.answer)
        return f"Comparing the options with the image.\nAnswer: {wrong}"


class MMMUProVision(MMMUPro):
    """MMMU-Pro, "vision" config: the question and options are inside the image. Schema: id, image,
    options, answer, subject. Prompt: MMMU-Pro's vision instruction only."""

    name = "mmmu_pro_vision"
    title = "MMMU-Pro (vision)"
    hub_config = "vision"
    variant = "vision"

    def to_example(self, row, index, base):
        w = self.where(index, row, "id")
        options = self._options(row, w)
        answer = gold_letter(self.require(row, "answer", w), options, w)
        image = self.image(row, ("image",), base, w)
        return Example(problem=MMMU_PRO_PROMPTS[self.mode]["vision"], images=[image], answer=answer,
                       id=str(row.get("id") or index), meta={"options": options, "subject": row.get("subject")})
