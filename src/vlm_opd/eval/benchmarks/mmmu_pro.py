"""MMMU-Pro (standard and vision): loader, prompt and scoring rule."""

from __future__ import annotations

from vlm_opd.data.example import Example
from vlm_opd.errors import ConfigError, DataError
from vlm_opd.eval.benchmarks.base import (
    ChoiceBenchmark,
    gold_letter,
    letters_block,
    parse_list_field,
)
from vlm_opd.eval.benchmarks.mmmu import mmmu_images

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


class MMMUPro(ChoiceBenchmark):
    """MMMU-Pro, "standard (10 options)" config. Schema: id, question, options (string form of a list),
    answer (letter), image_1 .. image_7, subject. Prompt: MMMU-Pro's (options as "A. ...") with its CoT
    instruction by default (`mode="direct"` for the direct one). Scoring: the last "Answer:" line, then
    the MMMU rule."""

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
