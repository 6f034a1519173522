"""MMMU's official rules (MMMU-Benchmark/MMMU eval/eval_utils.py @ bb91f23), case by case.

Each case names the line of the official code that decides it.
"""

import pytest

from vlm_opd.data.example import Example
from vlm_opd.eval.benchmarks.mmmu import (
    MMMU,
    mmmu_eval_open,
    mmmu_open_gold,
    mmmu_parse_multi_choice,
    mmmu_parse_open_response,
)
from vlm_opd.eval.scoring import OFFICIAL

OPTIONS = ["cat", "dog", "bird", "fish"]  # A B C D


def mc_example(gold="B", options=OPTIONS):
    return Example(problem="q", images=[], answer=gold, id="x", meta={"question_type": "multiple-choice", "options": options})


def open_example(gold):
    return Example(problem="q", images=[], answer=gold, id="y", meta={"question_type": "open"})


@pytest.mark.parametrize(
    "response, expected, why",
    [
        ("(B)", "B", "`if f'({choice})' in response`"),
        ("(b)", None, "the '(X)' and ' X ' tests are case-sensitive; 1 token is not > 5 -> random.choice"),
        ("**B**", None, "'*B*' is neither '(B)' nor ' B ' -> random.choice"),
        ("Answer:\nC", None, "'\\nC ' has no space before C, so ' C ' is absent -> random.choice"),
        ("The answer is B.", "B", "strip('.') then ' B ' in ' The answer is B '"),
        ("B.", "B", "the trailing '.' is stripped, then ' B '"),
        ("'B',", "B", "strip(',') then strip(\"'\") in the listed order"),
        ("(B).", "B", "'.' stripped, '(B)' found"),
        ("6 cm", None, "no letter, 2 tokens -> random.choice"),
        ("0.499", None, "no letter -> random.choice"),
        ("Yes/No", None, "no letter -> random.choice"),
        ("b", None, "lowercase letter is not ' B '"),
        ("dog", None, "an option's text counts only when the response has more than 5 tokens"),
        ("I think the answer is the dog here", "B", "> 5 tokens: `if ans.lower() in response.lower()`"),
        ("A or B", "B", "two candidates: `rfind(f' {can} ')`, the last one wins"),
        ("B is better than A", "A", "two candidates: A occurs last"),
        ("(A) looks right but (B) is", "B", "bracketed candidates: `rfind(f'({can})')`"),
        ("", None, "nothing at all -> random.choice"),
    ],
)
def test_multi_choice_parse(response, expected, why):
    """`parse_multi_choice_response`: the candidate steps in order, then the last-position tie break."""
    assert mmmu_parse_multi_choice(response, OPTIONS) == expected, why


def test_multi_choice_tie_goes_to_the_first_option():
    """`np.argmax(start_indexes)`: 'red' and 'red wine' start at the same place; argmax returns the first."""
    options = ["red", "red wine", "water", "milk"]
    assert mmmu_parse_multi_choice("I would pick red wine for this one", options) == "A"


def test_score_counts_random_choice_as_wrong_and_unparsed():
    """Where the official code calls `random.choice`, the item is wrong and unparsed (deterministic)."""
    bench = MMMU()
    s = bench.score("**B**", mc_example())
    assert (s.score, s.parsed, s.extracted, s.rule) == (0.0, False, None, OFFICIAL)
    s = bench.score("The answer is B.", mc_example())
    assert (s.score, s.parsed, s.extracted) == (1.0, True, "B")
    s = bench.score("The answer is C.", mc_example())
    assert (s.score, s.parsed, s.extracted) == (0.0, True, "C")


@pytest.mark.parametrize(
    "response, gold, expected, why",
    [
        ("6 cm", "6", True, "`extract_numbers` finds 6; `normalize_str` -> 6.0 == 6.0"),
        ("0.499", "0.5", True, "`normalize_str` rounds to 2 decimals: round(0.499, 2) == 0.5"),
        ("0.494", "0.5", False, "round(0.494, 2) == 0.49"),
        ("The answer is 2.50 A.", "2.5", True, "tail after 'is ' is '2.50 a'; its number 2.5"),
        ("So it is 3.", "2.5", False, "only 3.0 is read"),
        ("thus the color is Red.", "red", True, "strings: `norm_ans in pred` after lower-casing"),
        ("Yes/No", "yes", True, "substring: 'yes' in 'yes/no'"),
        ("the answer is matrix", "x", False, "one-character reference is ' x' / 'x ': not inside 'matrix'"),
        ("the answer is x", "x", True, "the prediction 'x' normalises to ' x' / 'x '"),
        ("The ratio is 1/4.", ["0.25", "1/4"], True, "a list of references: any one"),
        ("x = 12\nso y = 7", "12", False, "'=' is a key only in the last sentence; 'so ' gives '7' there"),
        ("", "2.5", False, "nothing to read"),
    ],
)
def test_open_rule(response, gold, expected, why):
    """`parse_open_response` then `eval_open`."""
    assert mmmu_eval_open(gold, mmmu_parse_open_response(response)) is expected, why


def test_open_gold_list_and_score():
    """MMMU stores several accepted open answers as a list's string form."""
    assert mmmu_open_gold("['0.25', '1/4']") == ["0.25", "1/4"]
    assert mmmu_open_gold("2.5") == "2.5"
    bench = MMMU()
    s = bench.score("So the ratio is 1/4", open_example("['0.25', '1/4']"))
    assert (s.score, s.parsed, s.rule) == (1.0, True, OFFICIAL)
    s = bench.score("   ", open_example("2.5"))
    assert (s.score, s.parsed) == (0.0, False)


def test_prompt_matches_construct_prompt(tmp_path):
    """`construct_prompt` + llava1.5.yaml: options as '(A) x' lines, a blank line, then the instruction."""
    from vlm_opd.eval.fixtures import write_fixture

    examples = {e.id: e for e in MMMU(write_fixture("mmmu", tmp_path)).load()}
    art = examples["validation_Art_2"].problem
    assert art.endswith("(A) The first\n(B) The second\n\nAnswer with the option's letter from the given choices directly.")
    physics = examples["validation_Physics_3"].problem
    assert physics.endswith("Find the current in amperes.\nAnswer the question using a single word or phrase.")
