"""MMMU: loader, prompt and scoring rule."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlm_opd.data.example import IMAGE_PLACEHOLDER, Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    MC_DIRECT,
    Benchmark,
    blank,
    gold_letter,
    letters_block,
    letters_of,
    parse_list_field,
)
from vlm_opd.eval.io import load_image
from vlm_opd.eval.scoring import (
    ItemScore,
    mmmu_open_correct,
    mmmu_open_predictions,
    score_choice,
)
from vlm_opd.rewards.extract import extract_final_answer


def mmmu_images(text: str, row: Mapping, base: Path | None, where: str, bench: Benchmark) -> tuple[str, list]:
    """Replace `<image N>` markers with `<image>` and collect image_N in marker order (MMMU layout)."""
    order = [int(n) for n in re.findall(r"<image\s*(\d+)>", text)]
    images = []
    cache: dict[int, Any] = {}
    for n in order:
        if n not in cache:
            field = f"image_{n}"
            if blank(row.get(field)):
                raise DataError(f"{where}: the prompt refers to <image {n}> but field {field!r} is empty")
            cache[n] = load_image(row[field], base, f"{where} field {field!r}", bench.image_dirs)
        images.append(cache[n])
    text = re.sub(r"<image\s*\d+>", IMAGE_PLACEHOLDER, text)
    if not images:
        # No markers: every present image goes before the text.
        images = [load_image(row[f"image_{i}"], base, f"{where} field 'image_{i}'", bench.image_dirs)
                  for i in range(1, 8) if not blank(row.get(f"image_{i}"))]
    if not images:
        raise DataError(f"{where}: no image (fields image_1 .. image_7 are all empty)")
    return text, images


class MMMU(Benchmark):
    """MMMU (validation). Schema: id, question, options (string form of a list), answer,
    question_type (multiple-choice / open), image_1 .. image_7 (`<image N>` markers in the text),
    subfield, topic_difficulty. Prompt: MMMU's (options as "(A) ..."), "Answer with the option's
    letter ..." or "Answer the question using a single word or phrase.". Scoring: MMMU rules
    (multiple choice without the random fallback; open questions by `parse_open_response`)."""

    name = "mmmu"
    title = "MMMU"
    group = "Visual"
    hub_path = "lmms-lab/MMMU"
    hub_split = "validation"

    def to_example(self, row, index, base):
        w = self.where(index, row, "id")
        question = str(self.require(row, "question", w)).strip()
        raw_answer = self.require(row, "answer", w)
        options = [str(o) for o in parse_list_field(row.get("options") or "[]", w, "options")]
        qtype = str(row.get("question_type") or ("multiple-choice" if options else "open"))
        if qtype == "multiple-choice":
            if len(options) < 2:
                raise DataError(f"{w}: a multiple-choice question needs at least two options")
            answer = gold_letter(raw_answer, options, w)
            text = f"{question}\n{letters_block(options, 'paren')}\n{MC_DIRECT}"
            meta: dict[str, Any] = {"question_type": qtype, "options": options}
        else:
            answer = str(raw_answer)
            text = f"{question}\nAnswer the question using a single word or phrase."
            meta = {"question_type": "open"}
        text, images = mmmu_images(text, row, base, w, self)
        meta["subfield"] = row.get("subfield")
        row_id = str(row.get("id") or index)
        return Example(problem=text, images=images, answer=answer, id=row_id, meta=meta)

    def score(self, completion, example, judge=None):
        if example.meta["question_type"] == "multiple-choice":
            return score_choice(completion, example.meta["options"], example.answer)
        if not completion or not completion.strip():
            return ItemScore(0.0, None, False)
        region = extract_final_answer(completion, fallback=False) or completion
        gold: Any = example.answer
        if isinstance(gold, str) and gold.strip().startswith("["):
            try:
                gold = [str(g) for g in ast.literal_eval(gold)]
            except (ValueError, SyntaxError):
                pass
        preds = mmmu_open_predictions(region)
        return ItemScore(float(mmmu_open_correct(preds, gold)), region.strip()[:200], True)

    def reference_completion(self, example):
        if example.meta["question_type"] == "multiple-choice":
            return f"Answer: ({example.answer})"
        gold = example.answer
        if gold.strip().startswith("["):
            gold = str(ast.literal_eval(gold)[0])
        return f"So the answer is {gold}"

    def wrong_completion(self, example):
        if example.meta["question_type"] == "multiple-choice":
            wrong = next(l for l in letters_of(example.meta["options"]) if l != example.answer)
            return f"Answer: ({wrong})"
        return "So the answer is -987654321"
