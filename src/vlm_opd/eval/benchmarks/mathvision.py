"""MATH-Vision: loader, prompt and scoring rule."""

from __future__ import annotations

import re
from typing import Any

from vlm_opd.data.example import IMAGE_PLACEHOLDER, Example
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    blank,
    gold_letter,
    letters_block,
    letters_of,
    parse_list_field,
)
from vlm_opd.eval.scoring import (
    ItemScore,
    read_math_answer,
    score_math,
)
from vlm_opd.rewards.extract import extract_choice, option_letters
from vlm_opd.rewards.verify import verify_math


class MathVision(Benchmark):
    """MATH-Vision (test). Schema: id, question (`<image1>` markers), options (list; empty for free-form,
    ["A", ..., "E"] when the options are drawn in the image), image / decoded_image, answer, solution,
    level, subject. Prompt: the official boxed instruction, question, "(A) ..." options. Scoring: the
    final answer equals the reference letter or the reference option's value (math-verify)."""

    name = "mathvision"
    title = "MathVision"
    group = "VOLD"
    hub_path = "MathLLMs/MathVision"
    hub_split = "test"

    def to_example(self, row, index, base):
        w = self.where(index, row, "id")
        question = str(self.require(row, "question", w)).strip()
        answer = str(self.require(row, "answer", w)).strip()
        options = [] if blank(row.get("options")) else [str(o) for o in parse_list_field(row["options"], w, "options")]
        text = question
        if options and "".join(options) != "".join(option_letters(len(options))):
            text += "\n" + letters_block(options, "paren")
        if options:
            answer = gold_letter(answer, options, w)
        prompt = ('Please solve the problem and put your answer in one "\\boxed{}". If it is a multiple choice '
                  'question, only one letter is allowed in the "\\boxed{}".\n' + text)
        image = self.image(row, ("decoded_image", "image"), base, w)
        markers = re.findall(r"<image\d*>", prompt)
        prompt = re.sub(r"<image\d*>", IMAGE_PLACEHOLDER, prompt) if len(markers) == 1 else prompt
        meta: dict[str, Any] = {"level": row.get("level"), "subject": row.get("subject")}
        if options:
            meta["options"] = options
        return Example(problem=prompt, images=[image], answer=answer, id=str(row.get("id") or index), meta=meta)

    def score(self, completion, example, judge=None):
        options = example.meta.get("options")
        if not options:
            return score_math(completion, example.answer)
        letter = extract_choice(completion, options)
        if letter is not None:
            return ItemScore(float(letter == example.answer), letter, True)
        # The official check also accepts the option's value ("12" for option "(C) 12").
        value = options[ord(example.answer) - ord("A")]
        answer = read_math_answer(completion)
        if answer is None:
            return ItemScore(0.0, None, False)
        return ItemScore(float(verify_math(answer, value)), answer, True)

    def wrong_completion(self, example):
        if example.meta.get("options"):
            wrong = next(l for l in letters_of(example.meta["options"]) if l != example.answer)
            return f"\\boxed{{{wrong}}}"
        return super().wrong_completion(example)
