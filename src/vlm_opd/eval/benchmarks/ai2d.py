"""AI2D: loader, prompt and the official scoring rule.

Prompt and scoring follow lmms-eval's task (EvolvingLMMs-Lab/lmms-eval `lmms_eval/tasks/ai2d/`):
`utils.ai2d_doc_to_text` with the default "mcq" format (question, "A. ..." option lines, then
"\\nAnswer with the option's letter from the given choices directly.") and the target letter
`options[int(answer)]` (`ai2d_doc_to_target`), read at `utils.py` 8bbda22b8f8722c9635d6256b42efc092fc55922
and `ai2d.yaml` 0312cf2675dbc2315846546a8f987a08e826df96. Scoring: the task's "flexible-extract"
filter `MultiChoiceRegexFilter` (the letter when the output STARTS with optional whitespace, a capital
and a period, `^\\s*([A-Z])\\.`; otherwise the whole output unchanged; read in a stored copy of the
task's `utils.py` whose commit the index does not record -- the two pinned versions above predate it
and have the filter commented out), then the `exact_match` metric with ignore_case and
ignore_punctuation (`lmms_eval/api/metrics.py` 008ddc83c2b57ccbd1457714c5a54c8f03896e9d:
`evaluate.load("exact_match")`, Hugging Face evaluate's exact_match; lmms-eval's later in-repo port
`exact_match_hf_evaluate` is the same): lower-case both sides, delete every character of
`string.punctuation`, compare for equality. Between the two, `ConfigurableTask.process_results`
strips the filtered output (`result = [res.strip() for res in results]`, `lmms_eval/api/task.py`
00dfe290ab8d113d5c171a41433ca16b3f9fe171). Written here from reading them.

Quirks reproduced:
- surrounding whitespace is stripped ("B\\n" is right) but inner whitespace is kept;
- punctuation is deleted, not replaced: "(b)", "**B**", "B)" and "b." all become "b" and are right;
- any sentence around the letter makes it wrong ("The answer is B.", "Answer:\\nC");
- an option's text is wrong even when it is the right option's text (the target is the letter).
There is no notion of "parsed" in lmms-eval; here an output counts as parsed when its normalised form
is one of the option letters, so `n_unparsed` counts outputs that can never match any option.
"""

from __future__ import annotations

import re
import string

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    blank,
    gold_letter,
    letters_block,
    letters_of,
    parse_list_field,
)
from vlm_opd.eval.scoring import OFFICIAL, ItemScore
from vlm_opd.rewards.extract import option_letters

AI2D_POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."
_OPTION_LETTER = re.compile(r"^\s*([A-Z])\.")
_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def ai2d_filter(response: str) -> str:
    """lmms-eval's `MultiChoiceRegexFilter`: the leading "X." letter, or the response unchanged."""
    match = _OPTION_LETTER.match(response)
    return match.group(1) if match else response


def ai2d_normalise(text: str) -> str:
    """`exact_match` with ignore_case and ignore_punctuation: lower-case, delete ASCII punctuation."""
    return text.lower().translate(_NO_PUNCTUATION)


def ai2d_score(completion: str, n_options: int, gold: str) -> ItemScore:
    """AI2D's verdict: the filtered output, normalised, equals the normalised target letter."""
    pred = ai2d_normalise(ai2d_filter(completion or "").strip())
    letters = {ai2d_normalise(l) for l in option_letters(n_options)}
    parsed = pred in letters
    return ItemScore(float(pred == ai2d_normalise(gold)), pred.upper() if parsed else None, parsed, OFFICIAL)


class AI2D(Benchmark):
    """AI2D (test). Schema (lmms-lab/ai2d): question, options (list), answer (0-based index or letter),
    image. Prompt and scoring: lmms-eval's (module docstring)."""

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
        prompt = f"{question}\n{letters_block(options, 'dot')}{AI2D_POST_PROMPT}"
        return Example(problem=prompt, images=[image], answer=answer, id=str(row.get("id", index)), meta={"options": options})

    def score(self, completion, example, judge=None, extraction=None):
        self._no_extraction(extraction)
        return ai2d_score(completion, len(example.meta["options"]), example.answer)

    # lmms-eval asks for the letter alone (max_new_tokens 16): the reference answers that way.
    def reference_completion(self, example):
        return example.answer

    def wrong_completion(self, example):
        return next(l for l in letters_of(example.meta["options"]) if l != example.answer)
