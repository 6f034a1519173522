"""LogicVista's official verdicts, derived line by line from Yijia-Xiao/LogicVista eval/extract_accuracy.py @
c8019a83c234d533223dfc5963c6c856ed554278 (the ASSISTANT: split, the one-character rule before GPT, the
PydanticOutputParser reply, and the lower-cased sorted list match against `answer.split(", ")`).
"""

import sys
from pathlib import Path

import pytest

from vlm_opd.data.example import Example
from vlm_opd.eval.benchmarks.logicvista import (
    NON_ANSWER,
    LogicVista,
    entry_of,
    extraction_prompt,
    matches,
    needs_llm,
    offline_extract,
    parse_choices,
)
from vlm_opd.eval.scoring import OFFLINE, Extraction

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_judge import FakeJudge  # noqa: E402



def example(answer="A, C"):
    return Example(problem="Which two? Select from A-D", answer=answer, id="v1_0",
                   meta={"question": "Which two? Select from A-D", "gold_set": sorted(answer.split(", "))})


@pytest.mark.parametrize(
    "predicted, answer, correct",
    [
        (["C", "A"], "A, C", True),  # both lists sorted
        (["a", "c"], "A, C", True),  # both lower-cased
        (["A"], "A, C", False),  # a subset is not the answer
        (["A", "C", "D"], "A, C", False),
        (["3"], "3", True),
        (["A,C"], "A, C", False),  # the answer is split on ", " only
        ([NON_ANSWER], "A", False),
        ([""], "A", False),
    ],
)
def test_match(predicted, answer, correct):
    """`MLLM_answers.sort(); truth_answers.sort(); if MLLM_answers == truth_answers: match = 1` (after .lower())."""
    assert matches(predicted, answer) is correct


@pytest.mark.parametrize(
    "entry, fixed",
    [
        ("F", [NON_ANSWER]),  # one letter outside a-e
        ("f", [NON_ANSWER]),
        (".", [NON_ANSWER]),  # one character, neither a letter nor a digit
        ("B", None),  # a letter a-e still goes to GPT
        ("b", None),
        ("3", None),  # a digit goes to GPT
        ("  ", [""]),  # empty after strip: [entry.strip()] is kept
        ("The answer is B.", None),
    ],
)
def test_rules_before_gpt(entry, fixed):
    """`if len(entry.strip()) != 0: if (len == 1 and isalpha and lower not in 'abcde') or (len == 1 and not
    isalpha and not isnumeric): ['ZZZZZ'] else: GPT`."""
    assert needs_llm(entry) == fixed


def test_entry_after_assistant():
    """`data[id]["answer"].split("ASSISTANT:")[1]` when the marker is present."""
    assert entry_of("USER: q ASSISTANT: B") == " B"
    assert entry_of("B") == "B"


def test_reply_parsing():
    """PydanticOutputParser(Answer): a JSON object with `choices: list[str]` (markdown fences allowed)."""
    assert parse_choices('{"choices": ["A", "C"]}') == ["A", "C"]
    assert parse_choices('```json\n{"choices": ["B"]}\n```') == ["B"]
    assert parse_choices('{"choices": [3]}') is None  # pydantic v2 does not coerce int to str
    assert parse_choices("A, C") is None


def test_judge_path():
    judge = FakeJudge('{"choices": ["c", "a"]}')
    s = LogicVista("unused").score("I pick A and C.", example(), judge=judge)
    assert (s.score, s.parsed, s.rule) == (1.0, True, "judge:fake")
    assert judge.prompts == [extraction_prompt("Which two? Select from A-D", "I pick A and C.")]
    p = judge.prompts[0]
    assert p.startswith("\n            You are a information extractor that extracts multiple choice letter answer")
    assert 'to the following question: "Which two? Select from A-D"\n\n' in p
    assert 'The answer is "I pick A and C."\nThe output should be formatted as a JSON instance' in p
    assert p.endswith('"required": ["choices"]}\n```\n            Helpful Answer:\n            ')
    # an unreadable reply becomes ZZZZZ (the official repair by other LLMs is not reproduced)
    s = LogicVista("unused").score("x y", example(), judge=FakeJudge("A and C"))
    assert (s.score, s.parsed) == (0.0, False)
    # the one-character rule decides without the judge
    judge = FakeJudge()
    s = LogicVista("unused").score("F", example("F"), judge=judge)
    assert (s.score, judge.prompts) == (0.0, [])  # even when the answer is "F": ZZZZZ


def test_outside_extraction():
    s = LogicVista("unused").score("long text", example(), extraction=Extraction('{"choices": ["A", "C"]}', "mine"))
    assert (s.score, s.rule) == (1.0, "extractor:mine")
    s = LogicVista("unused").score("long text", example(), extraction=Extraction("C, A", "mine"))
    assert s.score == 1.0


@pytest.mark.parametrize(
    "completion, choices",
    [
        ("Both fit, so Answer: C, A", ["A", "C"]),
        ("**Answer:** B", ["B"]),
        ("C, A", ["A", "C"]),  # a bare short reply
        ("I cannot tell.", [NON_ANSWER]),  # the pronoun is not option I
        ("Let me describe the figure in detail first, then decide.", [NON_ANSWER]),
        ("The answer is 3.", ["3"]),
    ],
)

def test_offline_rule(completion, choices):
    """The documented stand-in for GPT (not official)."""
    assert offline_extract(completion) == choices
    assert LogicVista("unused").score(completion, example()).rule == OFFLINE


def test_prompt_is_the_question(tmp_path):
    from vlm_opd.eval.fixtures import write_fixture

    examples = LogicVista(write_fixture("logicvista", tmp_path)).load()
    assert examples[0].problem == "Which choice (A, B, C, or D) completes the pattern?"
    assert examples[1].answer == "A, C" and examples[1].meta["gold_set"] == ["A", "C"]
