"""AI2D's rule: lmms-eval MultiChoiceRegexFilter, strip (task.py process_results), exact_match(ignore_case, ignore_punctuation)."""

import pytest

from vlm_opd.eval.benchmarks.ai2d import ai2d_filter, ai2d_score
from vlm_opd.eval.scoring import OFFICIAL


@pytest.mark.parametrize(
    "completion, correct, why",
    [
        ("B", True, "exact match"),
        ("b", True, "ignore_case: np.char.lower on both sides"),
        ("(b)", True, "ignore_punctuation deletes '(' and ')'"),
        ("**B**", True, "ignore_punctuation deletes '*'"),
        ("B. hawk", True, "the filter's `^\\s*([A-Z])\\.` keeps 'B'"),
        ("  B.", True, "the filter allows leading whitespace"),
        ("B)", True, "no filter match; ')' deleted -> 'b'"),
        ("Answer:\nC", False, "no filter match; 'answer\\nc' != 'b' (and != 'c')"),
        ("The answer is B.", False, "no filter match ('T' is not followed by '.'); the sentence != 'b'"),
        ("B\n", True, "`process_results` strips the filtered output: 'B\\n' -> 'B'"),
        ("B )", False, "strip happens before punctuation is deleted: 'B )' -> 'b ' != 'b'"),
        ("6 cm", False, "not the letter"),
        ("0.499", False, "'0499' != 'b'"),
        ("Yes/No", False, "'yesno' != 'b'"),
        ("hawk", False, "the target is the letter, not the option's text"),
        ("A or B", False, "'a or b' != 'b'"),
        ("b. hawk", False, "the filter needs a capital; 'b hawk' != 'b'"),
    ],
)
def test_exact_match(completion, correct, why):
    """Filter, then `exact_match_hf_evaluate` with ignore_case and ignore_punctuation (gold 'B', 4 options)."""
    assert ai2d_score(completion, 4, "B").score == float(correct), why


def test_filter():
    """`MultiChoiceRegexFilter.apply`: the leading letter, or the response unchanged."""
    assert ai2d_filter("C. pupa") == "C"
    assert ai2d_filter("pupa") == "pupa"


def test_parsed_means_normalises_to_an_option_letter():
    s = ai2d_score("(c)", 4, "B")
    assert (s.score, s.parsed, s.extracted, s.rule) == (0.0, True, "C", OFFICIAL)
    s = ai2d_score("The answer is B.", 4, "B")
    assert (s.score, s.parsed, s.extracted) == (0.0, False, None)
    s = ai2d_score("E", 4, "B")  # a letter beyond the options can never be right
    assert (s.score, s.parsed) == (0.0, False)


def test_prompt_is_lmms_evals_mcq_format(tmp_path):
    """`ai2d_doc_to_text`, 'mcq': f'{question}\\n{A. x lines}{post_prompt}'; target `options[int(answer)]`."""
    from vlm_opd.eval.benchmarks.ai2d import AI2D
    from vlm_opd.eval.fixtures import write_fixture

    second = AI2D(write_fixture("ai2d", tmp_path)).load()[1]
    assert second.problem == (
        "What eats the grass?\nA. rabbit\nB. hawk\nC. sun\nD. soil\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert second.answer == "A"
