"""MMStar's rule: VLMEvalKit can_infer (vlmeval/utils/matching_util.py @ 18fc37a), case by case."""

import pytest

from vlm_opd.eval.benchmarks.mmstar import can_infer, mmstar_score
from vlm_opd.eval.scoring import OFFICIAL

OPTIONS = {"A": "a cup", "B": "a cat", "C": "a book", "D": "a lamp"}


@pytest.mark.parametrize(
    "answer, expected, why",
    [
        ("(b)", None, "'(' ')' become spaces; 'b' is not the token 'B'; no option text inside"),
        ("**B**", "B", "'*' becomes a space: the token 'B', `count == 1`"),
        ("Answer:\nC", "C", "':' becomes a space: tokens 'Answer', 'C'"),
        ("The answer is B.", "B", "'.' becomes a space: token 'B'"),
        ("6 cm", None, "no letter token, no option text"),
        ("0.499", None, "no letter token, no option text"),
        ("Yes/No", None, "'/' is not split on; nothing matches"),
        ("c", None, "lowercase is not a letter token, and 'c' holds no option text"),
        ("a book", "C", "no letter token -> `can_infer_text`: only 'a book' occurs"),
        ("A cat.", "A", "the article 'A' is a letter token: `count == 1` -> A, before any text matching"),
        ("A or C", None, "two letter tokens -> `can_infer_option` False; no option text either"),
        ("Between a cup and a lamp", None, "two option texts -> `len(cands) == 1` fails"),
        ("Z", "Z", "no letter, one 'Z' token -> 'Z'"),
        ("Cannot determine the answer", "Z", "a refusal phrase -> 'Z'"),
        ("B B B", "B", "repeats of one letter count once"),
    ],
)
def test_can_infer(answer, expected, why):
    """`can_infer_option`, then `can_infer_text`."""
    assert can_infer(answer, OPTIONS) == expected, why


def test_score_correct_and_parsed_separately():
    """`extract_answer_from_item` gives 'Z' when nothing is inferred; 'Z' never equals the answer."""
    s = mmstar_score("The answer is C.", OPTIONS, "C")
    assert (s.score, s.parsed, s.extracted, s.rule) == (1.0, True, "C", OFFICIAL)
    s = mmstar_score("A cat.", {"A": "a cup", "B": "a cat"}, "B")
    assert (s.score, s.parsed, s.extracted) == (0.0, True, "A")
    for unreadable in ("(c)", "Z", "A or C"):
        s = mmstar_score(unreadable, OPTIONS, "C")
        assert (s.score, s.parsed) == (0.0, False), unreadable


def test_api_failure_marker_skips_the_letter_step_only():
    """'Failed to obtain answer via API' returns False from `can_infer_option`; the text step still runs."""
    assert can_infer("Failed to obtain answer via API. C", OPTIONS) is None
    assert can_infer("Failed to obtain answer via API: a lamp", OPTIONS) == "D"


def test_prompt_is_lmms_evals(tmp_path):
    """lmms-eval `mmstar_doc_to_text`: the stripped question, then the yaml's post_prompt (no final period)."""
    from vlm_opd.eval.benchmarks.mmstar import MMStar
    from vlm_opd.eval.fixtures import write_fixture

    first = MMStar(write_fixture("mmstar", tmp_path)).load()[0]
    assert first.problem == (
        "Which object is on the table?\nOptions: A: a cup, B: a cat, C: a book, D: a lamp"
        "\nAnswer with the option's letter from the given choices directly"
    )
