"""MathVerse's official verdicts, derived line by line from ZrrSkywalker/MathVerse evaluation/ @
9f81505610b1777a6cd674c2191c17f67110a499 (prompts.py @ ac31a9c8b92eb8eed87477ec7bc40b61ce5d9b61): extract_answer_s1.py (`create_test_prompt`, the stored
`extraction.replace('Extracted Answer: ', '').strip()`), score_answer_s2.py (`match_answer`: quick match
`inst['answer'] == inst['extraction']`, or the judge with `demo_prompt_score`) and prompts.py.
"""

import sys
from pathlib import Path

import pytest

from vlm_opd.data.example import Example
from vlm_opd.eval.benchmarks.mathverse import (
    EXTRACT_DEMO_PROMPT,
    MathVerse,
    clean_extraction,
    extraction_prompt,
    offline_extract,
    quick_match,
    score_prompt,
)
from vlm_opd.eval.scoring import OFFLINE, Extraction

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_judge import FakeJudge  # noqa: E402



def example(answer="B", qtype="multi-choice"):
    m = {"problem_version": "Vision Only", "question_type": qtype, "answer_raw": answer,
         "question": "Find the angle.\nChoices:\nA:30°\nB:45°"}
    if qtype == "multi-choice":
        m["options"] = {"A": "30°", "B": "45°", "C": "60°", "D": "90°"}
    return Example(problem="q", answer=answer, id="1", meta=m)


@pytest.mark.parametrize(
    "extraction, answer, correct",
    [
        ("B", "B", True),
        ("b", "B", False),  # `==`: case counts
        ("(B)", "B", False),
        ("B.", "B", False),
        ("B: 45°", "B", False),
        ("45°", "B", False),  # an option's text is not its letter without the judge
        ("22.3", "22.3", True),
        ("22.30", "22.3", False),  # no number parsing at all
        ("1.5", "\\frac{3}{2}", False),
        ("6 cm", "6", False),
    ],
)
def test_quick_match_is_exact_string_equality(extraction, answer, correct):
    """score_answer_s2.py `match_answer`: `'1' if inst['answer'] == inst['extraction'] else '0'`."""
    assert quick_match(answer, extraction) is correct


def test_stored_extraction_is_cleaned():
    """extract_answer_s1.py: `extraction.replace('Extracted Answer: ', '').strip()`."""
    assert clean_extraction("Extracted Answer: B\n") == "B"
    assert clean_extraction("  22.3 ") == "22.3"
    assert clean_extraction("Extracted answer: B") == "Extracted answer: B"  # only the capitalised form


def test_official_prompts():
    """`create_test_prompt` of both steps, with prompts.py's escapes evaluated as Python does."""
    p = extraction_prompt("So it is B.")
    assert p.startswith("I am providing you a response from a model to a math problem")
    assert p.endswith("7.\n\nModel response: 'So it is B.'\nExtracted Answer: ")
    # "\\n" in prompts.py is a line break; "\\\\(" is "\\("; "\\u00b0" is the degree sign.
    assert "approximately:\n\n(-2, 1)'" in EXTRACT_DEMO_PROMPT and "cos(38°)" in EXTRACT_DEMO_PROMPT
    assert "is \\((-4, 1]\\)." in EXTRACT_DEMO_PROMPT
    s = score_prompt("Find x.", "B", "b")
    assert s.startswith("Below are two answers to a math question.")
    # `demo_prompt.strip()` runs before `.format`, so the template's trailing space after "Judgement:" is gone.
    assert s.endswith("[Question]: Find x.\n[Standard Answer]: B\n[Model_answer] : b\nJudgement:")
    assert "\\frac{x^2}{81}" in s and "B:2√{3}" in s  # `{{x^2}}` after .format; "\\u221a" is √
    assert "[Question]: Find x.\n" in s


def test_judge_runs_both_steps():
    """Step 1 then step 2; "Judgement:" is removed from the verdict (`extraction.replace("Judgement:", "")`)."""
    judge = FakeJudge("Extracted Answer: B", "Judgement: 1")
    s = MathVerse("unused").score("long reasoning", example(), judge=judge)
    assert (s.score, s.extracted, s.parsed, s.rule) == (1.0, "B", True, "judge:fake")
    # [Question] is the release's `question` field (`inst['question']`)
    assert judge.prompts[1].endswith("A:30°\nB:45°\n[Standard Answer]: B\n[Model_answer] : B\nJudgement:")
    bad = MathVerse("unused").score("x", example(), judge=FakeJudge("B", "maybe"))
    assert (bad.score, bad.parsed) == (0.0, False)  # the official loop would ask again forever


def test_outside_extraction_with_and_without_judge():
    bench = MathVerse("unused")
    s = bench.score("ignored", example(), extraction=Extraction("Extracted Answer: B", "mine"))
    assert (s.score, s.rule) == (1.0, "extractor:mine")  # quick match
    s = bench.score("ignored", example(), extraction=Extraction("b", "mine"))
    assert s.score == 0.0
    judge = FakeJudge("1")  # only step 2 is asked
    s = bench.score("ignored", example(), judge=judge, extraction=Extraction("45°", "mine"))
    assert (s.score, s.rule, len(judge.prompts)) == (1.0, "extractor:mine", 1)


@pytest.mark.parametrize(
    "completion, answer, qtype, extracted, correct",
    [
        ("Reasoning.\nThe answer is B.", "B", "multi-choice", "B", 1.0),
        ("Reasoning.\nAnswer:\nC", "B", "multi-choice", "C", 0.0),
        ("So the answer is **(B)**", "B", "multi-choice", "B", 1.0),
        ("Thus \\boxed{\\frac{3}{2}}", "\\frac{3}{2}", "free-form", "\\frac{3}{2}", 1.0),
        ("The answer is $1.5$.", "\\frac{3}{2}", "free-form", "1.5", 0.0),  # quick match is a string match
    ],
)

def test_offline_rule_then_quick_match(completion, answer, qtype, extracted, correct):
    """Without a judge: `offline_extract` (documented stand-in for GPT), then the official quick match."""
    s = MathVerse("unused").score(completion, example(answer, qtype))
    assert (s.extracted, s.score, s.rule) == (extracted, correct, OFFLINE)


def test_offline_rule_reads_nothing_from_no_answer():
    assert offline_extract("", "free-form", "") == ""
    s = MathVerse("unused").score("", example())
    assert (s.score, s.parsed) == (0.0, False)
