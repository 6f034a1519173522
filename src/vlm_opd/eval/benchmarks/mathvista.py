"""MathVista: loader, prompt and scoring rule."""

from __future__ import annotations

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    blank,
    letters_block,
    parse_list_field,
)
from vlm_opd.eval.judge import (
    MATHVISTA_EXTRACT_PROMPT,
)
from vlm_opd.eval.scoring import (
    OFFLINE,
    ItemScore,
    mathvista_normalize_and_score,
    mathvista_rule_extract,
)
from vlm_opd.rewards.extract import option_letters


class MathVista(Benchmark):
    """MathVista (testmini). Schema: pid, question, image / decoded_image, choices, unit, precision,
    answer, question_type (multi_choice / free_form), answer_type (text / integer / float / list),
    query, metadata. Prompt: the release's `query`. Official scoring: GPT answer extraction, then
    type normalisation and exact match; with no judge a rule extractor stands in."""

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
        answer = str(self.require(row, "answer", w)).strip()
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
        """The release's `query` layout (hint, question, choices) for rows that lack it."""
        if qtype == "multi_choice":
            hint = "Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
        elif answer_type == "integer":
            hint = ("Please answer the question requiring an integer answer and provide the final value, "
                    "e.g., 1, 2, 3, at the end.")
        elif answer_type == "float":
            digits = int(float(precision or 1))
            places = "one decimal place" if digits == 1 else f"{digits} decimal places"
            hint = (f"Please answer the question requiring a floating-point number with {places} "
                    "and provide the final value at the end.")
        elif answer_type == "list":
            hint = ("Please answer the question requiring a Python list as an answer and provide the final list, "
                    "e.g., [1, 2, 3], at the end.")
        else:
            hint = "Please answer the question and provide the final answer at the end."
        text = f"Hint: {hint}\nQuestion: {question}"
        if unit:
            text += f" (Unit: {unit})"
        if choices:
            text += "\nChoices:\n" + letters_block(choices, "paren")
        return text

    def score(self, completion, example, judge=None):
        if judge is not None:
            prompt = MATHVISTA_EXTRACT_PROMPT.format(query=example.meta["query"], response=completion)
            extraction = judge.complete(prompt)
            rule = judge.rule
        else:
            extraction = mathvista_rule_extract(completion, example.meta)
            rule = OFFLINE
        score, pred, parsed = mathvista_normalize_and_score(extraction, example.meta)
        return ItemScore(score, pred, parsed, rule)

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
