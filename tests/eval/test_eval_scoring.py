"""Shared and math scoring rules on hand-written cases (each benchmark's own rule is tested in tests/eval/benchmarks/)."""


from vlm_opd.eval.scoring import (
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


