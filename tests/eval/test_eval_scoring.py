"""Scoring rules of each official protocol, on hand-written cases."""

import pytest

from vlm_opd.eval.scoring import (
    extract_yes_no,
    hallusion_metrics,
    mmmu_open_correct,
    mmmu_open_predictions,
    ocrbench_match,
    score_choice,
    score_math,
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


# ------------------------------------------------------------------ yes / no


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes", "yes"),
        ("No, the bar is shorter.", "no"),
        ("Looking closely, the answer is no.", "no"),
        ("Yes. Although one might say no at first glance...", "yes"),  # the first word commits
        ("The chart shows yes for 2019 and no for 2020.", None),  # both words, no commitment
        ("The label says no entry.\nSo, yes, it is there.", "yes"),  # the last line commits
        ("Let me check. \\boxed{No}", "no"),
        ("Nothing here answers it.", None),  # "Nothing" is not "no"
        ("", None),
    ],
)
def test_extract_yes_no(text, expected):
    assert extract_yes_no(text) == expected


def test_hallusion_metrics_by_hand():
    def row(cat, fig, q, set_id="0"):
        return {"category": cat, "subcategory": "s", "set_id": set_id, "figure_id": str(fig), "question_id": str(q)}

    rows = [row("VD", 0, 0), row("VD", 0, 1), row("VD", 1, 0), row("VD", 1, 1), row("VS", 0, 0, "9")]
    correct = [1, 1, 1, 0, 0]
    m = hallusion_metrics(rows, correct)
    assert m["aAcc"] == pytest.approx(60.0)
    # figures: (VD,0) all right, (VD,1) not; the VS figure-0 row is excluded -> 1/2
    assert m["fAcc"] == pytest.approx(50.0)
    # questions: q0 right on both figures, q1 wrong on figure 1, VS q0 wrong -> 1/3
    assert m["qAcc"] == pytest.approx(100.0 / 3)


# ------------------------------------------------------------------ OCRBench


def test_ocrbench_rule():
    assert ocrbench_match("The word is chelsea.", ["CHELSEA"], "IIIT5K")  # case-insensitive substring
    assert ocrbench_match("invoice 2041", ["INV-2041", "2041"], "docVQA")  # any of the answers
    assert not ocrbench_match("Chelsey", ["CHELSEA"], "IIIT5K")
    # HME100k: spaces stripped on both sides, case kept.
    assert ocrbench_match("x^{2}+1", ["x ^ { 2 } + 1"], "HME100k")
    assert not ocrbench_match("X^{2}+1", ["x ^ { 2 } + 1"], "HME100k")
    # The reasoning block is not the prediction.
    assert not ocrbench_match("<think>maybe CHELSEA</think> It says CHELSEY", ["CHELSEA"], "IIIT5K")


# ------------------------------------------------------------------ MMMU open


def test_mmmu_open_rule():
    assert mmmu_open_correct(mmmu_open_predictions("Therefore the current is 2.50 A."), "2.5")
    assert mmmu_open_correct(mmmu_open_predictions("The ratio is 1/4."), ["0.25", "1/4"])
    assert not mmmu_open_correct(mmmu_open_predictions("So it is 3."), "2.5")
    assert mmmu_open_correct(mmmu_open_predictions("thus the color is Red."), "red")
