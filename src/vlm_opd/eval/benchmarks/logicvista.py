"""LogicVista: loader, prompt and scoring rule."""

from __future__ import annotations

import re

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
)
from vlm_opd.eval.scoring import (
    ItemScore,
)
from vlm_opd.rewards.extract import extract_final_answer


class LogicVista(Benchmark):
    """LogicVista. Schema (data/dataset.json of the official repo, an object keyed by id): imagename,
    question, answer (one or more letters "A, C", or a number), reasoning, skill, capability; images in
    data/images/. Scoring (the official one asks an LLM which letters were chosen): the set of option
    letters (or numbers) in the final answer ("Answer: A, C", boxed, or a reply of at most five words)
    must equal the reference set. No hub release: pass the repo's data directory."""

    name = "logicvista"
    title = "LogicVista"
    group = "VOLD"
    hub_path = None

    def to_example(self, row, index, base):
        row_id = str(row.get("_key") or row.get("id") or row.get("index") or index)
        w = f"{self.title} row {index} (id {row_id!r})"
        question = str(self.require(row, "question", w)).strip()
        answer = str(self.require(row, "answer", w)).strip()
        gold = self._tokens(answer)
        if not gold:
            raise DataError(f"{w}: answer {answer!r} holds no option letter or number")
        image = self.image(row, ("image", "imagename", "image_path"), base, w)
        prompt = (f"{question}\nThink it through, then give the final answer (the option letter, letters separated "
                  "by commas, or the number) on the last line as 'Answer: ...'.")
        return Example(problem=prompt, images=[image], answer=", ".join(sorted(gold)), id=row_id,
                       meta={"gold_set": sorted(gold), "skill": row.get("skill")})

    @staticmethod
    def _tokens(text: str) -> set[str]:
        # Capital letters A-I standing alone are options; "I" followed by a lower-case word is the pronoun.
        letters = re.findall(r"(?<![A-Za-z])([A-H]|I(?!\s*['a-z]))(?![A-Za-z])", text)
        if letters:
            return set(letters)
        return set(re.findall(r"-?\d+(?:\.\d+)?", text))

    def score(self, completion, example, judge=None):
        text = (completion or "").replace("*", "")
        region = extract_final_answer(text, fallback=False)
        if region is None and 0 < len(text.split()) <= 5:
            region = text  # a bare short answer such as "B, D"; longer text without a marker is unparsed
        if region is None:
            return ItemScore(0.0, None, False)
        tokens = self._tokens(region)
        if not tokens:
            return ItemScore(0.0, None, False)
        pred = ", ".join(sorted(tokens))
        return ItemScore(float(tokens == set(example.meta["gold_set"])), pred, True)

    def reference_completion(self, example):
        return f"Following the pattern.\nAnswer: {example.answer}"

    def wrong_completion(self, example):
        return "Following the pattern.\nAnswer: Z"
