"""Shared and math scoring rules on hand-written cases (each benchmark's own rule is tested in tests/eval/benchmarks/)."""

import pytest

from vlm_opd.eval.scoring import (
    mathvista_normalize_and_score,
    mathvista_rule_extract,
    score_choice,
    score_math,
    wemath_four_dimensional,
)

# ------------------------------------------------------------------ multiple choice / math


def test_score_choice_counts_unparsed():
    opts = ["1", "2", "3", "4"]
    assert score_choice("After checking, (B) is correct.", opts, "B").score == 1.0
    assert score_choice("After checking, option C.", opts, "B").score == 0.0
    unparsed = score_choice("I cannot decide.", opts, "B")
    assert (unparsed.score, unparsed.parsed, unparsed.extracted) == (0.0, False, None)


def test_score_math_and_unparsed_last_line():
    assert score_math("the area is \\boxed{\\frac{1}{2}}", "0.5").score == 1.0
    assert score_math("It measures 12 cm.", "12").score == 1.0  # last-line fallback with a number
    s = score_math("I do not know.", "12")
    assert (s.score, s.parsed) == (0.0, False)  # a last line without any math is not an answer


# ------------------------------------------------------------------ MathVista


def mv(qtype, atype, answer, precision=None, choices=None):
    return {"question_type": qtype, "answer_type": atype, "answer": answer, "precision": precision, "choices": choices}


@pytest.mark.parametrize(
    "completion, meta, expected",
    [
        ("so x = 3", mv("free_form", "integer", "3"), 1.0),
        ("The answer is 3.0", mv("free_form", "integer", "3"), 1.0),
        ("The answer is 1,000 people", mv("free_form", "integer", "1000"), 1.0),
        ("The answer is 0.50", mv("free_form", "float", "0.5", precision=2.0), 1.0),  # 0.50 vs 0.5
        ("The answer is 0.503", mv("free_form", "float", "0.5", precision=2.0), 1.0),  # rounds to 0.5
        ("The answer is 0.51", mv("free_form", "float", "0.5", precision=2.0), 0.0),
        ("The answer is 1.25", mv("free_form", "float", "1.2", precision=1.0), 1.0),  # Python's round, as the release
        ("The answer is 1.3", mv("free_form", "float", "1.2", precision=1.0), 0.0),
        ("The answer is [2007, 2008]", mv("free_form", "list", "[2007, 2008]"), 1.0),
        ("The answer is [2008, 2007]", mv("free_form", "list", "[2007, 2008]"), 0.0),
        ("The answer is (C) 60°.", mv("multi_choice", "text", "60°", choices=["30°", "45°", "60°"]), 1.0),
        ("60°", mv("multi_choice", "text", "60°", choices=["30°", "45°", "60°"]), 1.0),
        ("The answer is B", mv("multi_choice", "text", "60°", choices=["30°", "45°", "60°"]), 0.0),
    ],
)
def test_mathvista_rule(completion, meta, expected):
    score, _, parsed = mathvista_normalize_and_score(mathvista_rule_extract(completion, meta), meta)
    assert parsed and score == expected


def test_mathvista_unparsed_never_guesses_nearest_option():
    meta = mv("multi_choice", "text", "60°", choices=["30°", "45°", "60°"])
    score, pred, parsed = mathvista_normalize_and_score(mathvista_rule_extract("I am unsure.", meta), meta)
    assert (score, pred, parsed) == (0.0, None, False)
    score, _, parsed = mathvista_normalize_and_score("no number here", mv("free_form", "integer", "3"))
    assert (score, parsed) == (0.0, False)


# ------------------------------------------------------------------ WeMath


def test_wemath_four_dimensional_by_hand():
    def group(gid, steps, sub, multi):
        rows = [{"ID": gid, "key": f"{steps}steps_{i + 1}"} for i in range(steps)] + [{"ID": gid, "key": f"{steps}steps_multi"}]
        return rows, list(sub) + [multi]

    cases = [
        group("a", 2, [1, 1], 1),  # CM strict and loose
        group("b", 2, [1, 0], 1),  # RM strict, CM loose
        group("c", 2, [0, 0], 1),  # RM strict and loose
        group("d", 2, [1, 1], 0),  # IG
        group("e", 3, [0, 1, 1], 0),  # IK
    ]
    rows = [r for rs, _ in cases for r in rs] + [{"ID": "f", "key": "2steps_1"}]  # an incomplete group
    correct = [c for _, cs in cases for c in cs] + [1]
    m, counts = wemath_four_dimensional(rows, correct)
    assert counts == {"groups": 5, "incomplete_groups": 1}
    assert m["IK"] == pytest.approx(20.0) and m["IG"] == pytest.approx(20.0)
    assert m["CM_strict"] == pytest.approx(20.0) and m["CM_loose"] == pytest.approx(40.0)
    assert m["RM_strict"] == pytest.approx(100.0 * 2 / 3)  # 2 of CM+RM = 3
    assert m["RM_loose"] == pytest.approx(100.0 * 1 / 3)
    assert m["score_strict"] == pytest.approx(100.0 * (5 - 0.5 - 2 - 1) / 5)
    assert m["score_loose"] == pytest.approx(100.0 * (5 - 0.5 - 1 - 1) / 5)
    assert m["S2"] == pytest.approx(75.0) and m["S3"] == pytest.approx(0.0)
    assert m["S1"] == pytest.approx(100.0 * 7 / 11)  # sub-steps right: 2 + 1 + 0 + 2 + 2
