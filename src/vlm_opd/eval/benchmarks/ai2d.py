"""AI2D: loader, prompt and scoring rule."""

from __future__ import annotations

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    MC_DIRECT,
    ChoiceBenchmark,
    blank,
    gold_letter,
    letters_block,
    parse_list_field,
)
from vlm_opd.rewards.extract import option_letters


class AI2D(ChoiceBenchmark):
    """AI2D (test). Schema (lmms-lab/ai2d): question, options (list), answer (0-based index or letter),
    image. Prompt: question, lettered options, "Answer with the option's letter ..."."""

    name = "ai2d"
    title = "AI2D"
    group = "Visual"
    hub_path = "lmms-lab/ai2d"
    hub_split = "test"

    def to_example(self, row, index, base):
        w = self.where(index, row, "id")
        question = str(self.require(row, "question", w)).strip()
        if not blank(row.get("options")):
            options = [str(o) for o in parse_list_field(row["options"], w, "options")]
        else:
            options = [str(row[l]) for l in "ABCDEFGH" if not blank(row.get(l))]
        if len(options) < 2:
            raise DataError(f"{w}: needs an 'options' list (or A/B/C/D columns) with at least two options")
        raw = str(self.require(row, "answer", w)).strip()
        if raw.isdigit():
            if int(raw) >= len(options):
                raise DataError(f"{w}: answer index {raw} is out of range for {len(options)} options")
            answer = option_letters(len(options))[int(raw)]
        else:
            answer = gold_letter(raw, options, w)
        image = self.image(row, ("image",), base, w)
        prompt = f"{question}\n{letters_block(options, 'dot')}\n{MC_DIRECT}"
        return Example(problem=prompt, images=[image], answer=answer, id=str(row.get("id", index)), meta={"options": options})
