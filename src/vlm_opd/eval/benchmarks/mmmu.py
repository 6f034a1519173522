"""MMMU: loader, prompt and the official scoring rule.

Scoring reproduces MMMU-Benchmark/MMMU `eval/eval_utils.py` at commit
bb91f232fa7a7900395b264f69f57914f0c68ee1 (the MMMU release's `parse_multi_choice_response`,
`parse_open_response`, `normalize_str`, `extract_numbers`, `eval_multi_choice`, `eval_open`), written
here from reading it. One deliberate change: where the official parser calls `random.choice` (no
candidate found), the item counts as wrong and unparsed, so the number is deterministic and the
unparsed rate is reported (`n_unparsed` in results.json).

Quirks reproduced (multiple choice):
- the response is stripped of , . ! ? ; : ' at both ends, one character class after the other in
  that order, then padded with one space on each side;
- candidates, in this order of precedence: "(X)" anywhere; else " X " (a capital letter standing
  alone between spaces: "B." at the end works because the period was stripped, "B," in the middle
  does not); else, only if the padded response has more than 5 whitespace-separated tokens, every
  option whose text occurs case-insensitively;
- lowercase letters are never letters ("(b)" does not match "(B)");
- several candidates: the one whose "(X)" / " X " / option text occurs last (`rfind`) wins; a tie of
  positions goes to the earliest option (`np.argmax` returns the first maximum).

Quirks reproduced (open questions): the shortest tail after the key phrases ("could be ", "so ",
"is ", "thus ", "therefore ", "final ", "answer ", "result ", and "=" in the last sentence) of every
sentence; every number in those tails; numbers compared after rounding to 2 decimals; strings by
substring; a one-character reference must be a separate word (" x" / "x ").
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
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
from vlm_opd.eval.scoring import OFFICIAL, ItemScore

MMMU_SOURCE = "MMMU-Benchmark/MMMU eval/eval_utils.py @ bb91f232fa7a7900395b264f69f57914f0c68ee1"


# ----------------------------------------------------------------- multiple choice

def _first_argmax(values: Sequence[int]) -> int:
    """`np.argmax`: index of the first maximum."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def mmmu_parse_multi_choice(response: str, options: Sequence[str] | Mapping[str, str], *, pro: bool = False) -> str | None:
    """The option letter MMMU's `parse_multi_choice_response` reads, or None where it would guess at random.

    Args:
        response: the model's full output.
        options: option texts in order (letters A, B, ...) or a letter -> text mapping.
        pro: MMMU-Pro's variant (`mmmu-pro/evaluate.py`): first the text after the last "Answer:" if
            it contains exactly one option letter; then " X" / "X." candidates instead of " X ".
    """
    index2ans = dict(options) if isinstance(options, Mapping) else dict(zip(letters_of(options), options))
    all_choices = list(index2ans)
    if pro:
        pos = response.rfind("Answer:")
        if pos != -1:
            answer_str = response[pos + len("Answer:"):].strip()
            matching = [c for c in all_choices if c in answer_str]
            if len(matching) == 1:
                return matching[0]
    for char in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(char)
    response = " " + response + " "

    index_ans = True
    ans_with_brack = False
    candidates = [c for c in all_choices if f"({c})" in response]
    if candidates:
        ans_with_brack = True
    if not candidates:
        # MMMU: f" {c} "; MMMU-Pro's evaluate.py: f"{c} " (no space before the letter).
        candidates = [c for c in all_choices if (f"{c} " if pro else f" {c} ") in response]
    if not candidates and pro:
        candidates = [c for c in all_choices if f"{c}." in response]
    if not candidates and len(response.split()) > 5:
        for c, ans in index2ans.items():
            if str(ans).lower() in response.lower():
                candidates.append(c)
                index_ans = False
    if not candidates:
        return None  # official: random.choice(all_choices)
    if len(candidates) == 1:
        return candidates[0]
    if index_ans:
        pattern = "({})" if ans_with_brack else " {} "
        starts = [response.rfind(pattern.format(c)) for c in candidates]
    else:
        starts = [response.lower().rfind(str(index2ans[c]).lower()) for c in candidates]
    return candidates[_first_argmax(starts)]


def mmmu_eval_multi_choice(gold: str | Sequence[str], pred: str | None) -> bool:
    """`eval_multi_choice`: exact equality with the reference (or with any reference of a list)."""
    if pred is None:
        return False
    return pred in gold if isinstance(gold, (list, tuple)) else pred == gold


# ----------------------------------------------------------------- open questions

def _check_is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
        return True
    except ValueError:
        return False


def mmmu_normalize_str(s: str) -> list:
    """`normalize_str`: a number rounded to 2 decimals, else the lower-cased string (padded if one char)."""
    s = s.strip()
    if _check_is_number(s):
        return [round(float(s.replace(",", "")), 2)]
    s = s.lower()
    return [" " + s, s + " "] if len(s) == 1 else [s]


def mmmu_extract_numbers(s: str) -> list[str]:
    """`extract_numbers`: numbers with thousands commas, then scientific notation, then plain numbers."""
    with_commas = re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", s)
    scientific = re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", s)
    simple = re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])", s)
    return with_commas + scientific + simple


def mmmu_parse_open_response(response: str) -> list:
    """`parse_open_response`: normalised candidate answers (strings and floats) read from the response."""

    def key_subresponses(text: str) -> list[str]:
        text = text.strip().strip(".").lower()
        # The official split looks for ". " before a capital letter after lower-casing, so only the
        # newline part of this pattern can ever split.
        subs = re.split(r"\.\s(?=[A-Z])|\n", text)
        indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
        keys: list[str] = []
        for i, resp in enumerate(subs):
            if i == len(subs) - 1:
                indicators.extend(["="])
            shortest = None
            for ind in indicators:
                if ind in resp:
                    tail = resp.split(ind)[-1].strip()
                    if not shortest:
                        shortest = tail
                    elif len(tail) < len(shortest):
                        shortest = tail
            if shortest and shortest.strip() not in [":", ",", ".", "!", "?", ";", ":", "'"]:
                keys.append(shortest)
        return keys or [text]

    keys = key_subresponses(response)
    preds: list = list(keys)
    for resp in keys:
        preds.extend(mmmu_extract_numbers(resp))
    normalised: list = []
    for p in preds:
        normalised.extend(mmmu_normalize_str(p))
    return list(dict.fromkeys(normalised))  # official: list(set(...)); the verdict does not depend on order


def mmmu_eval_open(gold: str | Sequence[str], preds: Sequence) -> bool:
    """`eval_open`: a float prediction must equal a normalised reference; a string must contain one."""
    golds = [gold] if isinstance(gold, str) else list(gold)
    norm: list = []
    for g in golds:
        norm.extend(mmmu_normalize_str(str(g)))
    for pred in preds:
        if isinstance(pred, str):
            if any(isinstance(n, str) and n in pred for n in norm):
                return True
        elif pred in norm:
            return True
    return False


def mmmu_open_gold(answer: str) -> str | list[str]:
    """The reference of an open question: MMMU stores several accepted answers as a list's string form."""
    text = answer.strip()
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return answer
        if isinstance(value, (list, tuple)):
            return [str(v) for v in value]
    return answer


# ----------------------------------------------------------------- loader

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
    subfield, topic_difficulty. Prompt: MMMU's `construct_prompt` with its `eval/configs/llava1.5.yaml`
    (that file is not in the search index; read in its verbatim copy PathMMU-Benchmark/PathMMU
    `eval/configs/llava1.5.yaml` f1ca4d33d407185a0e306b6185ab2f269926207c): the question, the options as
    "(A) ..." lines, a blank line, "Answer with the option's letter from the given choices directly.";
    open questions: the question, then "Answer the question using a single word or phrase.".
    Scoring: the official MMMU rules (module docstring), with no random fallback."""

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
            # construct_prompt: each option line ends in "\n", and the format "{}\n{}\nAnswer ..." adds
            # another, so a blank line separates the options from the instruction.
            text = f"{question}\n{letters_block(options, 'paren')}\n\n{MC_DIRECT}"
            meta: dict[str, Any] = {"question_type": qtype, "options": options}
        else:
            answer = str(raw_answer)
            text = f"{question}\nAnswer the question using a single word or phrase."
            meta = {"question_type": "open"}
        text, images = mmmu_images(text, row, base, w, self)
        meta["subfield"] = row.get("subfield")
        row_id = str(row.get("id") or index)
        return Example(problem=text, images=images, answer=answer, id=row_id, meta=meta)

    def score(self, completion, example, judge=None, extraction=None):
        self._no_extraction(extraction)
        completion = completion or ""
        if example.meta["question_type"] == "multiple-choice":
            letter = mmmu_parse_multi_choice(completion, example.meta["options"])
            return ItemScore(float(mmmu_eval_multi_choice(example.answer, letter)), letter, letter is not None, OFFICIAL)
        preds = mmmu_parse_open_response(completion)
        ok = mmmu_eval_open(mmmu_open_gold(example.answer), preds)
        # The official open parser always returns something; only an empty output reads as nothing.
        parsed = bool(completion.strip())
        return ItemScore(float(ok), completion.strip()[:200] if parsed else None, parsed, OFFICIAL)

    def reference_completion(self, example):
        if example.meta["question_type"] == "multiple-choice":
            return f"Answer: ({example.answer})"
        gold = mmmu_open_gold(example.answer)
        return f"So the answer is {gold if isinstance(gold, str) else gold[0]}"

    def wrong_completion(self, example):
        if example.meta["question_type"] == "multiple-choice":
            wrong = next(l for l in letters_of(example.meta["options"]) if l != example.answer)
            return f"Answer: ({wrong})"
        return "So the answer is -987654321"
