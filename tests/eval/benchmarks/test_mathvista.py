"""MathVista's official verdicts, derived line by line from lupantech/MathVista.

extract_answer.py @ ed0d56de2146e75ec9d389ffce6e8af05431e846 (`extract_answer`, `create_test_prompt`) and
calculate_score.py @ e999481e7c42e70b8c97094bb5c7729d4a69c201 (`normalize_extracted_answer`,
`get_most_similar`, `safe_equal`). Each test names the official line that decides it.
"""

import sys
from pathlib import Path

import pytest

from vlm_opd.data.example import Example
from vlm_opd.eval.benchmarks.mathvista import (
    EXTRACT_DEMO_PROMPT,
    MathVista,
    extraction_prompt,
    levenshtein,
    normalize_extracted_answer,
    offline_extract,
    quick_extract,
    score_extraction,
)
from vlm_opd.eval.scoring import OFFLINE, Extraction

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_judge import FakeJudge  # noqa: E402

CHOICES = ["30°", "45°", "60°", "90°"]


def meta(answer_type="text", answer="60°", precision=None, choices=None):
    qtype = "multi_choice" if answer_type == "text" else "free_form"
    return {"question_type": qtype, "answer_type": answer_type, "answer": answer, "precision": precision,
            "choices": CHOICES if (choices is None and qtype == "multi_choice") else (choices or []),
            "query": "Hint: ...\nQuestion: q"}


def example(m):
    return Example(problem=m["query"], answer=m["answer"], id="1", meta=m)



# ------------------------------------------------------------------ multi_choice normalisation


@pytest.mark.parametrize(
    "extraction, prediction, parsed",
    [
        ("(b)", "45°", True),  # re.findall(r'\(([a-zA-Z])\)') then .upper(): "(b)" -> "B" -> choices[1]
        ("(A) or (C)", "30°", True),  # two letters: `letter[0]`, the first one
        ("B", "45°", True),  # `extraction in sequential_characters`
        (" C ", "60°", True),  # `extraction.strip()` first
        ("60°", "60°", True),  # an option's text: get_most_similar at distance 0
        ("c", "30°", False),  # lower case is not in ["A".."D"]: get_most_similar; all distances 3 -> first
        ("**B**", "30°", False),  # no "(x)", not a letter: edit distance 5 to every choice -> first
        ("Answer:\nC", "30°", False),  # same: nearest choice, first on ties
        ("The answer is B.", "30°", False),  # the GPT step exists to prevent this; the rule itself guesses
        ("60", "60°", False),  # distance 1 to "60°", 2 to the others
        ("", "30°", False),  # ignore_empty_extractions=False (the default): "" -> the shortest choice, first
    ],
)
def test_multi_choice_normalisation(extraction, prediction, parsed):
    """`normalize_extracted_answer`, multi_choice branch: "(x)" letter, option letter, else get_most_similar."""
    assert normalize_extracted_answer(extraction, meta()) == (prediction, parsed)


def test_nearest_choice_can_be_correct_but_is_unparsed():
    """`safe_equal(prediction, answer)` after get_most_similar: a guessed "30°" is right when 30° is the answer."""
    s = score_extraction("**B**", meta(answer="30°"), OFFLINE)
    assert (s.score, s.extracted, s.parsed) == (1.0, "30°", False)
    assert score_extraction("**B**", meta(answer="45°"), OFFLINE).score == 0.0


def test_levenshtein_is_plain_edit_distance():
    """`distance` of python-Levenshtein (unit insert / delete / substitute)."""
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3 and levenshtein("60°", "60°") == 0


# ------------------------------------------------------------------ integer / float / list


@pytest.mark.parametrize(
    "extraction, answer, correct, parsed",
    [
        ("6", "6", 1.0, True),
        ("6.7", "6", 1.0, True),  # str(int(float(x))): truncation, not rounding
        ("-0.5", "0", 1.0, True),  # int(-0.5) == 0
        ("6.", "6", 1.0, True),
        ("1e3", "1000", 1.0, True),  # float() reads scientific notation
        ("6 cm", "6", 0.0, False),  # float("6 cm") raises -> None: units make it unreadable
        ("1,000", "1000", 0.0, False),  # float("1,000") raises -> None
        ("inf", "6", 0.0, False),  # int(float("inf")) raises OverflowError -> None
    ],
)
def test_integer(extraction, answer, correct, parsed):
    """`answer_type == 'integer'`: `str(int(float(extraction)))`, except -> None; then `prediction == answer`."""
    s = score_extraction(extraction, meta("integer", answer), OFFLINE)
    assert (s.score, s.parsed) == (correct, parsed)


@pytest.mark.parametrize(
    "extraction, answer, precision, correct",
    [
        ("0.499", "0.5", 2.0, 1.0),  # round(0.499, 2) == 0.5 -> "0.5"
        ("0.50", "0.5", 2.0, 1.0),  # str(round(0.5, 2)) == "0.5": trailing zeros vanish
        ("0.51", "0.5", 2.0, 0.0),
        ("1.25", "1.2", 1.0, 1.0),  # Python's round(1.25, 1) == 1.2 (binary float)
        ("1.005", "1.01", 2.0, 0.0),  # round(1.005, 2) == 1.0 -> "1.0" != "1.01"
        ("1.45", "1.45", 2.0, 1.0),
        ("1.5", "1.50", 2.0, 0.0),  # the answer string is not normalised: "1.5" != "1.50"
        ("0.5 m", "0.5", 2.0, 0.0),  # float() raises -> None
    ],
)
def test_float_precision(extraction, answer, precision, correct):
    """`answer_type == 'float'`: `str(round(float(extraction), int(precision)))` compared as a string."""
    assert score_extraction(extraction, meta("float", answer, precision), OFFLINE).score == correct


@pytest.mark.parametrize(
    "extraction, correct",
    [("[2007, 2008]", 1.0), ("[2007,2008]", 0.0), ("[2008, 2007]", 0.0), ("2007, 2008", 0.0)],
)
def test_list_is_string_equality(extraction, correct):
    """`answer_type == 'list'`: `str(extraction)` then `==`: spacing and order count."""
    assert score_extraction(extraction, meta("list", "[2007, 2008]"), OFFLINE).score == correct


# ------------------------------------------------------------------ the extraction step


def test_quick_rules_before_gpt():
    """`extract_answer`: "" -> ""; a multi_choice response in choices; int(response) / float(response)."""
    assert quick_extract("", meta()) == ""
    assert quick_extract("60°", meta()) == "60°" and quick_extract("60° ", meta()) is None  # `response in choices`
    assert quick_extract(" 6 ", meta("integer", "6")) == "6"  # int() ignores surrounding spaces
    assert quick_extract("6 cm", meta("integer", "6")) is None  # -> GPT
    assert quick_extract("0.499", meta("float", "0.5", 2.0)) == "0.499"  # str(float(response))
    assert quick_extract("The answer is 6", meta("integer", "6")) is None


def test_judge_gets_the_official_prompt_and_its_reply_is_scored_officially():
    """`create_test_prompt`: demo_prompt.strip(), "\\n\\n", query, "\\n\\n", response, "\\n\\nExtracted answer: "."""
    bench = MathVista("unused")
    m = meta()
    judge = FakeJudge("(C) 60°")
    s = bench.score("Long reasoning... so it is C.", example(m), judge=judge)
    assert (s.score, s.extracted, s.parsed, s.rule) == (1.0, "60°", True, "judge:fake")
    prompt = judge.prompts[0]
    assert prompt == extraction_prompt(m["query"], "Long reasoning... so it is C.")
    assert prompt.startswith("Please read the following example. Then extract the answer")
    assert prompt.endswith("Hint: ...\nQuestion: q\n\nLong reasoning... so it is C.\n\nExtracted answer: ")
    # The demo's multiple-choice question holds real line breaks ("\n" in a normal Python string).
    assert "What fraction of the shape is blue?\nChoices:\n(A) 3/11\n(B) 8/11" in EXTRACT_DEMO_PROMPT
    # A bare integer answer never reaches the judge (int(response) succeeds).
    judge = FakeJudge()
    assert bench.score("6", example(meta("integer", "6")), judge=judge).score == 1.0 and judge.prompts == []


def test_extraction_needs_a_name():
    with pytest.raises(ValueError, match="name the extractor"):
        Extraction("B", " ")
    with pytest.raises(TypeError, match="must be a string"):
        Extraction(None, "mine")


def test_outside_extraction_is_tagged_and_scored_officially():
    bench = MathVista("unused")
    s = bench.score("whatever the model wrote", example(meta("float", "0.5", 2.0)),
                    extraction=Extraction("0.499", "my-llm"))
    assert (s.score, s.extracted, s.rule) == (1.0, "0.5", "extractor:my-llm")


# ------------------------------------------------------------------ the offline stand-in (documented, not official)


@pytest.mark.parametrize(
    "completion, m, extracted",
    [
        ("The answer is (B) 45°.", meta(), "B"),
        ("So the answer is **C**.", meta(), "C"),
        ("The answer is 1,234 people.", meta("integer", "1234"), "1234"),
        ("Luca needs $1.45.\nThe answer is $1.45.", meta("float", "1.45", 2.0), "1.45"),
        ("The answer is [2007, 2008].", meta("list", "[2007, 2008]"), "[2007, 2008]"),
        ("I cannot tell.", meta("integer", "6"), ""),
    ],
)

def test_offline_rule(completion, m, extracted):
    assert offline_extract(completion, m) == extracted


def test_offline_items_are_tagged():
    s = MathVista("unused").score("The answer is 6 cm.", example(meta("integer", "6")))
    assert (s.score, s.rule) == (1.0, OFFLINE)  # the offline rule reads the number; not comparable
