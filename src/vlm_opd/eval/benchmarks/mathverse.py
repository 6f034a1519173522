"""MathVerse: loader, prompt, and the official two-step scorer (extract, then judge or quick match).

Sources (ZrrSkywalker/MathVerse, `evaluation/extract_answer_s1.py` and `evaluation/score_answer_s2.py` @
9f81505610b1777a6cd674c2191c17f67110a499, `evaluation/prompts.py` @ ac31a9c8b92eb8eed87477ec7bc40b61ce5d9b61):
- prompt: the release's `query_cot` (the CoT protocol of the paper); `query_wo` on request.
- step 1, `extract_answer_s1.py`: GPT reads the answer with `prompts.py::demo_prompt_extract`
  (`create_test_prompt`: demo stripped, blank line, "Model response: '<response>'\\nExtracted Answer: "),
  and the reply is kept as `reply.replace('Extracted Answer: ', '').strip()`.
- step 2, `score_answer_s2.py`: `match_answer` either asks GPT with `prompts.py::demo_prompt_score`
  (the release's `question` field, its answer, the extraction; the reply with "Judgement:" removed and
  stripped must be "0" or "1") or, with `--quick_match`, compares `answer == extraction` as strings:
  case, spaces and LaTeX all count ("B" != "b", "\\frac{3}{2}" != "1.5").

Here: with a judge, both steps use it (tag "judge:<model>"); with `extraction=` (your own step 1) and a
judge, the judge does step 2 (tag "extractor:<name>"), and without a judge the quick match does it
(same tag); with neither, `offline_extract` stands in for step 1 and the quick match decides (OFFLINE).
A judge reply that is not "0"/"1" (the official script asks again forever) counts as wrong and unparsed.
"""

from __future__ import annotations

import re
from collections import defaultdict

from vlm_opd.data.example import Example
from vlm_opd.errors import ConfigError, DataError
from vlm_opd.eval.benchmarks.base import (
    Benchmark,
    blank,
    parse_inline_options,
)
from vlm_opd.eval.judge import Judge
from vlm_opd.eval.scoring import OFFLINE, Extraction, ItemScore
from vlm_opd.rewards.extract import extract_final_answer

SOURCE = "ZrrSkywalker/MathVerse evaluation/score_answer_s2.py @ 9f81505610b1777a6cd674c2191c17f67110a499"

# prompts.py::demo_prompt_extract, written with the same Python escapes as the official source.
EXTRACT_DEMO_PROMPT = """
I am providing you a response from a model to a math problem, termed 'Model Response'. You should extract the answer from the response as 'Extracted Answer'. Directly output the extracted answer with no explanation.

1.
Model response: 'Rounded to two decimal places, the perimeter of the sector is approximately:\n\n(-2, 1)'
Extracted Answer: (-2, 1)

2.
Model response: 'at those points.\n\nTherefore, the correct option that represents the meaning of the intersection points of the graphs is:\n\nD. They give the solutions to the equation $f(t)=g(t)$.",'
Extracted Answer: D

3.
Model response: ' at 1 (there's a closed circle at y = 1), the range in interval notation is \\((-4, 1]\\).\n\nFinal values:\nDomain: \\((-3, 3]\\)\nRange: \\((-4, 1]\\)'
Extracted Answer: Domain: \\((-3, 3]\\)\nRange: \\((-4, 1]\\)

4.
Model response: 'As it stands, I cannot provide the correct option letter because there isn't enough information to solve for 'y'.'
Extracted Answer: null

5.
Model response: 'Given that AB = 17.6 meters, we can now substitute into the equation:\n\nd = 17.6 / cos(38\u00b0)\n\nTherefore, to one decimal place, the distance d between Ned and Bart is approximately 22.3 meters.'
Extracted answer: 22.3

6.
Model response:  have all the coefficients for the quadratic function:\n\\( f(x) = ax^2 + bx + c \\)\n\\( f(x) = -1x^2 - 2x + 1 \\)\n\nTherefore, the equation for the graphed function \\( f \\) is:\n\\( f(x) = -x^2 - 2x + 1 \\)"'
Extracted answer: f(x) = -x^2 - 2x + 1

7.
"""

# prompts.py::demo_prompt_score @ ac31a9c8b92eb8eed87477ec7bc40b61ce5d9b61 (the newest stored version; an older one
# had different examples); `{{`/`}}` stay doubled because the official code calls .format on it.
SCORE_DEMO_PROMPT = """
Below are two answers to a math question. Question is [Question], [Standard Answer] is the standard answer to the question, and [Model_answer] is the answer extracted from a model's output to this question.  Determine whether these two answers are consistent.
Please note that only when the [Model_answer] completely matches the [Standard Answer] means they are consistent. For non-multiple-choice questions, if the meaning is expressed in the same way, it is also considered consistent, for example, 0.5m and 50cm.
If they are consistent, Judement is 1; if they are different, Judement is 0.

[Question]: Write the set of numbers represented on the number line in interval notation.
[Standard Answer]: (-2,1]
[Model_answer] : Extracted Answer: \\((-2, 1)\\)
Judgement: 0

[Question]: As shown in the figure, circle O has a radius 1.0, if angle BAC = 60.0, then the length of BC is ()\nChoices:\nA:2\nB:2\u221a{{3}}\nC:\u221a{{3}}\nD:2\u221a{{2}}
[Standard Answer]: C
[Model_answer] : B:2\u221a{{3}}
Judgement: 0

[Question]: Find the domain and range of the function f using interval notation.
[Standard Answer]: domain: [-4, 0) and range: (-3, 1]
[Model_answer] : Range: \\((-4, 1]\\)
Judgement: 0

[Question]: As shown in the figure, circle O has a radius 1.0, if angle BAC = 60.0, then the length of BC is ()\nChoices:\nA:2\nB:2\u221a{{3}}\nC:\u221a{{3}}\nD:2\u221a{{2}}
[Standard Answer]: C
[Model_answer] : null
Judgement: 0

[Question]: Given the graph of the ellipse that intersects with x-axis at 9 and -9 and with y-axis at 3 and -3, determine its equation.A. \\frac{{x^2}}{{81}} + \\frac{{y^2}}{{9}} = 1 B. Can not determine.\n
[Standard Answer]: A
[Model_answer] : \\frac{{x^2}}{{81}} + \\frac{{y^2}}{{9}} = 1
Judgement: 1

[Question]: {question}
[Standard Answer]: {gt}
[Model_answer] : {extraction}
Judgement: """


def extraction_prompt(response: str) -> str:
    """`create_test_prompt` of extract_answer_s1.py."""
    return f"{EXTRACT_DEMO_PROMPT.strip()}\n\nModel response: '{response}'\nExtracted Answer: "


def score_prompt(question: str, answer: str, extraction: str) -> str:
    """`create_test_prompt` of score_answer_s2.py."""
    return SCORE_DEMO_PROMPT.strip().format(question=question, gt=answer, extraction=extraction)


def clean_extraction(reply: str) -> str:
    """What extract_answer_s1.py stores as `extraction`."""
    return reply.replace("Extracted Answer: ", "").strip()


def quick_match(answer: str, extraction: str) -> bool:
    """`match_answer(..., quick_match=True)`: exact string equality with the release's answer."""
    return answer == extraction


_LETTER = re.compile(r"(?<![A-Za-z])\(?([A-Z])\)?(?![A-Za-z])")


def offline_extract(response: str, question_type: str, letters: str) -> str:
    """Documented rule standing in for step 1 when no judge is given (not official).

    The final-answer region (`\\boxed{}`, "the answer is", "Answer:", else the last line) with "$" and
    "**" removed and stripped of spaces and a trailing "."; for multi-choice the last standalone
    capital letter of an option in it (with or without parentheses), else the region. "" if nothing
    can be read.
    """
    region = extract_final_answer(response.replace("**", ""))
    if region is None:
        return ""
    region = region.replace("$", "").strip().rstrip(".").strip()
    if question_type == "multi-choice":
        found = [m for m in _LETTER.findall(region) if m in letters]
        return found[-1] if found else region
    return region


class MathVerse(Benchmark):
    """MathVerse (testmini). Schema: sample_index, problem_index, problem_version, question, image,
    answer, question_type (multi-choice / free-form), query_wo, query_cot, question_for_eval, metadata.
    Prompt: `query_cot` by default (`prompt_field="query_wo"` for the direct protocol). Scoring: the
    official extraction + judgement (or quick match); see the module docstring. Reports accuracy per
    problem version as well (acc/<version>)."""

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
        raw_answer = str(self.require(row, "answer", w))
        answer = raw_answer.strip()
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
        # score_answer_s2.py fills the judge prompt's [Question] with the release's `question` field as is.
        meta = {"problem_version": version, "question_type": qtype, "answer_raw": raw_answer,
                "question": "" if row.get("question") is None else str(row["question"])}
        if qtype == "multi-choice":
            options = parse_inline_options(str(row.get("question") or "")) or parse_inline_options(prompt)
            if not options:
                options = {l: "" for l in "ABCD"}  # options live in the diagram; letters still readable
            if answer.upper() not in options:
                raise DataError(f"{w}: multi-choice answer {answer!r} is not an option letter ({', '.join(options)})")
            answer = answer.upper()
            meta["options"] = options
        return Example(problem=prompt, images=images, answer=answer, id=sid, meta=meta)

    def score(self, completion: str, example: Example, judge: Judge | None = None,
              extraction: Extraction | None = None) -> ItemScore:
        """Official verdict (see the module docstring for which step uses what)."""
        meta = example.meta
        gold = meta.get("answer_raw", example.answer)
        if extraction is not None:
            text, rule = clean_extraction(extraction.text), extraction.rule
        elif judge is not None:
            text, rule = clean_extraction(judge.complete(extraction_prompt(completion))), judge.rule
        else:
            letters = "".join(meta.get("options") or {})
            text, rule = offline_extract(completion, meta["question_type"], letters), OFFLINE
        parsed = text not in ("", "null")
        if judge is None:
            return ItemScore(float(quick_match(gold, text)), text, parsed, rule)
        reply = judge.complete(score_prompt(meta["question"], gold, text))
        verdict = reply.replace("Judgement:", "").strip()
        if verdict not in ("0", "1"):
            return ItemScore(0.0, text, False, rule)
        return ItemScore(float(verdict == "1"), text, parsed, rule)

    def run_metrics(self, examples, scores):
        metrics, counts = super().run_metrics(examples, scores)
        by_version: dict[str, list[float]] = defaultdict(list)
        for ex, s in zip(examples, scores):
            by_version[ex.meta["problem_version"]].append(s.score)
        for version, vals in sorted(by_version.items()):
            metrics[f"acc/{version}"] = 100.0 * sum(vals) / len(vals)
        return metrics, counts

    def reference_completion(self, example):
        return f"Let me think step by step.\nThe answer is \\boxed{{{example.meta.get('answer_raw', example.answer)}}}."

    def wrong_completion(self, example):
        if example.meta["question_type"] == "multi-choice":
            wrong = next(l for l in example.meta["options"] if l != example.answer)
            return f"The answer is \\boxed{{{wrong}}}."
        return super().wrong_completion(example)
