"""MathVista: loader, prompt, answer extraction and the official scorer.

Official pipeline (lupantech/MathVista):
- `evaluation/extract_answer.py` @ ed0d56de2146e75ec9d389ffce6e8af05431e846, `extract_answer`: a few
  rules first (empty response; a multi_choice response that *is* one of the choices; an integer /
  float question whose whole response parses as int / float), otherwise GPT reads the answer with the
  demo prompt `prompts/ext_ans.py` (reproduced below as `EXTRACT_DEMO_PROMPT`, with
  `create_test_prompt`'s layout). The optional `--quick_extract` regex is off by default there and here.
- `evaluation/calculate_score.py` @ e999481e7c42e70b8c97094bb5c7729d4a69c201, `normalize_extracted_answer`
  + `safe_equal`: multi_choice: strip, "(x)" anywhere -> that letter upper-cased, a letter A.. picks its
  choice, anything else (lower-case "b", "B.", "", a paraphrase) picks the choice at the smallest
  Levenshtein distance (first one on ties); integer: `str(int(float(x)))`; float:
  `str(round(float(x), int(precision)))`; list: `str(x)`; then plain `==` with the release's answer
  string. Nothing goes through a math verifier: "0.50" == "0.5" only because of `float` + `round`, and
  "6 cm" is no integer at all.

`parsed` (not an official notion) is False when the extraction was empty or unusable (None after
normalising), or when the multiple-choice answer was guessed by the nearest-choice fallback; the
verdict (`score`) is still the official one, so a guessed nearest choice can count as correct.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    blank,
    letters_block,
    parse_list_field,
)
from vlm_opd.eval.judge import Judge
from vlm_opd.eval.scoring import OFFLINE, Extraction, ItemScore
from vlm_opd.rewards.extract import extract_final_answer, option_letters

SOURCE = "lupantech/MathVista evaluation/calculate_score.py @ e999481e7c42e70b8c97094bb5c7729d4a69c201"

# prompts/ext_ans.py `demo_prompt` of lupantech/MathVista (as quoted, pinned to ece407d305f0bca51b689567c956cf70c8cdd847,
# by lmms-eval's MathVista task); the official extractor strips it and appends "{query}\n\n{response}".
EXTRACT_DEMO_PROMPT = """
Please read the following example. Then extract the answer from the model response and type it at the end of the prompt.

Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end.
Question: Which number is missing?

Model response: The number missing in the sequence is 14.

Extracted answer: 14

Hint: Please answer the question requiring a floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.
Question: What is the fraction of females facing the camera?

Model response: The fraction of females facing the camera is 0.6, which means that six out of ten females in the group are facing the camera.

Extracted answer: 0.6

Hint: Please answer the question requiring a floating-point number with two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.
Question: How much money does Luca need to buy a sour apple candy and a butterscotch candy? (Unit: $)

Model response: Luca needs $1.45 to buy a sour apple candy and a butterscotch candy.

Extracted answer: 1.45

Hint: Please answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.
Question: Between which two years does the line  graph saw its maximum peak?

Model response: The line graph saw its maximum peak between 2007 and 2008.

Extracted answer: [2007, 2008]

Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.
Question: What fraction of the shape is blue?\nChoices:\n(A) 3/11\n(B) 8/11\n(C) 6/11\n(D) 3/5

Model response: The correct answer is (B) 8/11.

Extracted answer: B
"""


def extraction_prompt(query: str, response: str) -> str:
    """`create_test_prompt` of extract_answer.py: demo, blank line, query, blank line, response."""
    return f"{EXTRACT_DEMO_PROMPT.strip()}\n\n{query}\n\n{response}\n\nExtracted answer: "


def levenshtein(a: str, b: str) -> int:
    """Edit distance with unit costs (python-Levenshtein's `distance`)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def quick_extract(response: str, meta: Mapping) -> str | None:
    """The rules `extract_answer` applies before calling GPT; None means GPT would be asked.

    Python's own `int()` / `float()` decide, as in the official code (so " 7 " and "1_000" parse, "6 cm"
    and "1,000" do not).
    """
    if response == "":
        return ""
    if meta["question_type"] == "multi_choice" and response in meta["choices"]:
        return response
    if meta["answer_type"] == "integer":
        try:
            return str(int(response))
        except ValueError:
            pass
    if meta["answer_type"] == "float":
        try:
            return str(float(response))
        except ValueError:
            pass
    return None


def normalize_extracted_answer(extraction: str, meta: Mapping) -> tuple[str | None, bool]:
    """`normalize_extracted_answer` (ignore_empty_extractions=False, the default): (prediction, parsed).

    `parsed` is False for None predictions and for multi_choice answers guessed by edit distance (an
    extraction equal to a choice's text, distance 0, counts as read).
    """
    if meta["question_type"] == "multi_choice":
        choices = [str(c) for c in meta["choices"]]
        text = extraction.strip()
        letters = re.findall(r"\(([a-zA-Z])\)", text)
        if letters:
            text = letters[0].upper()
        sequential = [chr(ord("A") + i) for i in range(len(choices))]
        if text in sequential:
            return choices[sequential.index(text)], True
        distances = [levenshtein(text, c) for c in choices]
        nearest = distances.index(min(distances))
        return choices[nearest], distances[nearest] == 0  # an exact choice text is read, not guessed
    answer_type = meta["answer_type"]
    if answer_type == "integer":
        try:
            return str(int(float(extraction))), True
        except (ValueError, OverflowError, TypeError):
            return None, False
    if answer_type == "float":
        try:
            return str(round(float(extraction), int(meta["precision"]))), True
        except (ValueError, OverflowError, TypeError):
            return None, False
    if answer_type == "list":
        return str(extraction), True
    return extraction, True


def score_extraction(extraction: str, meta: Mapping, rule: str) -> ItemScore:
    """`normalize_extracted_answer` then `safe_equal` (plain `==` with the answer string)."""
    prediction, parsed = normalize_extracted_answer(extraction, meta)
    parsed = parsed and extraction.strip() != ""
    return ItemScore(float(prediction is not None and prediction == meta["answer"]), prediction, parsed, rule)


_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_LIST = re.compile(r"\[[^\[\]]*\]")
_LETTER = re.compile(r"(?<![A-Za-z])\(?([A-Z])\)?(?![A-Za-z])")


def offline_extract(response: str, meta: Mapping) -> str:
    """Documented rule standing in for the GPT extractor when no judge is given (not official).

    The final-answer region (`\\boxed{}`, "the answer is", "Answer:", else the last line) is read;
    multi_choice: "(X)" or a standalone capital letter of a choice in it, else the region itself (the
    official normaliser then matches it to a choice); integer / float: the last number in it with
    thousands separators dropped (the demo prompt extracts "1.45" from "$1.45"); list: the last
    "[...]" in it; otherwise the region. "" when nothing can be read.
    """
    region = extract_final_answer(response.replace("**", ""))
    if region is None:
        return ""
    region = region.strip()
    if meta["question_type"] == "multi_choice":
        if region in meta["choices"]:
            return region
        n = len(meta["choices"])
        letters = [m for m in _LETTER.findall(region) if ord(m) - ord("A") < n]
        return letters[-1] if letters else region
    if meta["answer_type"] in ("integer", "float"):
        numbers = _NUMBER.findall(region.replace(",", ""))
        return numbers[-1] if numbers else ""
    if meta["answer_type"] == "list":
        lists = _LIST.findall(region)
        return lists[-1] if lists else ""
    return region


class MathVista(Benchmark):
    """MathVista (testmini). Schema: pid, question, image / decoded_image, choices, unit, precision,
    answer, question_type (multi_choice / free_form), answer_type (text / integer / float / list),
    query, metadata. Prompt: the release's `query` (built by `evaluation/build_query.py`: hint,
    question, choices). Scoring: the official extraction (rules, then the judge with the official demo
    prompt) and the official normaliser + exact match; see the module docstring."""

    name = "mathvista"
    title = "MathVista"
    group = "Math"
    hub_path = "AI4Math/MathVista"
    hub_split = "testmini"
    uses_judge = True

    def to_example(self, row, index, base):
        w = self.where(index, row, "pid")
        pid = str(row.get("pid") or row.get("_key") or index)
        question = str(self.require(row, "question", w)).strip()
        answer = str(self.require(row, "answer", w))
        qtype = str(self.require(row, "question_type", w))
        if qtype not in ("multi_choice", "free_form"):
            raise DataError(f"{w}: question_type must be 'multi_choice' or 'free_form', got {qtype!r}")
        answer_type = str(row.get("answer_type") or "text")
        choices = row.get("choices")
        choices = [] if blank(choices) else [str(c) for c in parse_list_field(choices, w, "choices")]
        if qtype == "multi_choice":
            if not choices:
                raise DataError(f"{w}: a multi_choice question needs a non-empty 'choices' list")
            if answer not in choices:
                raise DataError(f"{w}: answer {answer!r} is not one of the choices {choices}")
        if answer_type == "float" and blank(row.get("precision")):
            raise DataError(f"{w}: a float question needs 'precision' (the official scorer rounds to it)")
        query = row.get("query")
        if blank(query):
            query = self._build_query(question, qtype, answer_type, row.get("precision"), choices, row.get("unit"))
        image = self.image(row, ("decoded_image", "image"), base, w)
        meta = {
            "question_type": qtype, "answer_type": answer_type, "precision": row.get("precision"),
            "choices": choices, "answer": answer, "unit": row.get("unit"), "query": str(query),
        }
        if choices:
            meta["options"] = choices
        return Example(problem=str(query), images=[image], answer=answer, id=pid, meta=meta)

    @staticmethod
    def _build_query(question, qtype, answer_type, precision, choices, unit) -> str:
        """The release's `query` layout (hint, question, choices) for rows that lack it; the hint texts
        are those of `create_one_query` in evaluation/build_query.py."""
        if qtype == "multi_choice":
            hint = "Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
        elif answer_type == "integer":
            hint = ("Please answer the question requiring an integer answer and provide the final value, "
                    "e.g., 1, 2, 3, at the end.")
        elif answer_type == "float" and int(float(precision)) == 2:
            hint = ("Please answer the question requiring a floating-point number with two decimal places "
                    "and provide the final value, e.g., 1.23, 1.34, 1.45, at the end.")
        elif answer_type == "float":
            hint = ("Please answer the question requiring a floating-point number with one decimal place "
                    "and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.")
        else:
            hint = ("Please answer the question requiring a Python list as an answer and provide the final list, "
                    "e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.")
        text = f"Hint: {hint}\nQuestion: {question}"
        if unit:
            text += f" (Unit: {unit})"
        if choices:
            text += "\nChoices:\n" + letters_block(choices, "paren")
        return text

    def score(self, completion: str, example: Example, judge: Judge | None = None,
              extraction: Extraction | None = None) -> ItemScore:
        """Official verdict for one completion.

        The official pre-GPT rules (`quick_extract`) come first; otherwise the answer is `extraction`
        (tagged "extractor:<name>"), the judge's reply to the official demo prompt ("judge:<model>"), or
        `offline_extract` (OFFLINE). Items are tagged by the path of the run, also when a rule decided.
        """
        meta = example.meta
        quick = quick_extract(completion, meta)  # the official rules before the LLM step
        if extraction is not None:
            return score_extraction(quick if quick is not None else extraction.text, meta, extraction.rule)
        if judge is not None:
            text = quick if quick is not None else judge.complete(extraction_prompt(meta["query"], completion))
            return score_extraction(text, meta, judge.rule)
        text = quick if quick is not None else offline_extract(completion, meta)
        return score_extraction(text, meta, OFFLINE)

    def reference_completion(self, example):
        m = example.meta
        if m["question_type"] == "multi_choice":
            letter = option_letters(len(m["choices"]))[m["choices"].index(example.answer)]
            return f"Looking at the figure carefully.\nThe answer is ({letter}) {example.answer}."
        return f"Looking at the figure carefully.\nThe answer is \\boxed{{{example.answer}}}."

    def wrong_completion(self, example):
        m = example.meta
        if m["question_type"] == "multi_choice":
            wrong = next(c for c in m["choices"] if c != example.answer)
            letter = option_letters(len(m["choices"]))[m["choices"].index(wrong)]
            return f"The answer is ({letter})."
        if m["answer_type"] == "list":
            return "The answer is \\boxed{[-1]}."
        try:
            return f"The answer is \\boxed{{{float(example.answer) + 7}}}."
        except ValueError:
            return "The answer is \\boxed{-987654321}."
