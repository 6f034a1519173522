"""MathVerse: loader, prompt and scoring rule."""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict

from vlm_opd.data.example import Example
from vlm_opd.errors import ConfigError, DataError
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    blank,
    parse_inline_options,
)
from vlm_opd.eval.judge import (
    MATHVERSE_EXTRACT_PROMPT,
    MATHVERSE_SCORE_PROMPT,
)
from vlm_opd.eval.scoring import (
    OFFLINE,
    ItemScore,
    score_choice,
    score_math,
)


class MathVerse(Benchmark):
    """MathVerse (testmini). Schema: sample_index, problem_index, problem_version, question, image,
    answer, question_type (multi-choice / free-form), query_wo, query_cot, question_for_eval, metadata.
    Prompt: `query_cot` by default (`prompt_field="query_wo"` for the direct protocol). Official
    scoring: GPT extraction then GPT consistency judgement; with no judge, option letters are read
    with the MMMU rule and free-form answers verified with math-verify. Reports accuracy per problem
    version as well (acc/<version>)."""

    name = "mathverse"
    title = "MathVerse"
    group = "Math"
    hub_path = "AI4Math/MathVerse"
    hub_config = "testmini"
    hub_split = "testmini"
    uses_judge = True

    def __init__(self, source=None, prompt_suffix=None, prompt_field: str = "query_cot"):
        super().__init__(source, prompt_suffix)
        if prompt_field not in ("query_cot", "query_wo", "question"):
            raise ConfigError(f"MathVerse prompt_field must be query_cot, query_wo or question, got {prompt_field!r}")
        self.prompt_field = prompt_field

    def to_example(self, row, index, base):
        w = self.where(index, row, "sample_index")
        sid = str(self.require(row, "sample_index", w))
        version = str(self.require(row, "problem_version", w))
        answer = str(self.require(row, "answer", w)).strip()
        qtype = str(self.require(row, "question_type", w))
        if qtype not in ("multi-choice", "free-form"):
            raise DataError(f"{w}: question_type must be 'multi-choice' or 'free-form', got {qtype!r}")
        prompt = None
        for field in (self.prompt_field, "query_cot", "query_wo", "question"):
            if not blank(row.get(field)):
                prompt = str(row[field])
                break
        if prompt is None:
            raise DataError(f"{w}: none of the prompt fields query_cot / query_wo / question is present")
        images = []
        if version != "Text Only" or not blank(row.get("image")):
            images = [self.image(row, ("image", "decoded_image"), base, w)]
        meta = {"problem_version": version, "question_type": qtype,
                "question_for_eval": str(row.get("question_for_eval") or row.get("question") or prompt)}
        if qtype == "multi-choice":
            options = parse_inline_options(str(row.get("question") or "")) or parse_inline_options(prompt)
            if not options:
                options = {l: "" for l in "ABCD"}  # options live in the diagram; letters still readable
            if answer.upper() not in options:
                raise DataError(f"{w}: multi-choice answer {answer!r} is not an option letter ({', '.join(options)})")
            answer = answer.upper()
            meta["options"] = options
        return Example(problem=prompt, images=images, answer=answer, id=sid, meta=meta)

    def score(self, completion, example, judge=None):
        if judge is not None:
            extraction = judge.complete(MATHVERSE_EXTRACT_PROMPT.format(response=completion))
            parsed = extraction.strip().lower() not in ("", "null", "none")
            if not parsed:
                return ItemScore(0.0, None, False, judge.rule)
            prompt = MATHVERSE_SCORE_PROMPT.format(
                question=example.meta["question_for_eval"], answer=example.answer, extraction=extraction
            )
            verdict = judge.complete(prompt)
            digit = re.search(r"[01]", verdict)
            return ItemScore(float(bool(digit) and digit.group(0) == "1"), extraction, True, judge.rule)
        if example.meta["question_type"] == "multi-choice":
            s = score_choice(completion, example.meta["options"], example.answer)
        else:
            s = score_math(completion, example.answer)
        return dataclasses.replace(s, rule=OFFLINE)

    def run_metrics(self, examples, scores):
        metrics, counts = super().run_metrics(examples, scores)
        by_version: dict[str, list[float]] = defaultdict(list)
        for ex, s in zip(examples, scores):
            by_version[ex.meta["problem_version"]].append(s.score)
        for version, vals in sorted(by_version.items()):
            metrics[f"acc/{version}"] = 100.0 * sum(vals) / len(vals)
        return metrics, counts

    def wrong_completion(self, example):
        if example.meta["question_type"] == "multi-choice":
            wrong = next(l for l in example.meta["options"] if l != example.answer)
            return f"The answer is \\boxed{{{wrong}}}."
        return super().wrong_completion(example)
