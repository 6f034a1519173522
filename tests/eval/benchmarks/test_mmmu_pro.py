"""MMMU-Pro's official rule (MMMU-Benchmark/MMMU mmmu-pro/evaluate.py @ a76d44b), case by case."""

import pytest

from vlm_opd.eval.benchmarks.mmmu import mmmu_parse_multi_choice
from vlm_opd.eval.benchmarks.mmmu_pro import mmmu_pro_score
from vlm_opd.eval.scoring import OFFICIAL

OPTIONS = [f"option {c}" for c in "ABCDEFGHIJ"]


@pytest.mark.parametrize(
    "response, expected, why",
    [
        ("Answer:\nC", "C", "`response.rfind('Answer:')`, then `option in answer_str` finds only C"),
        ("Answer: (D)\nOn reflection... Answer: E", "E", "the LAST 'Answer:' is read"),
        ("Answer: B (not D)", "B", "two letters after 'Answer:' -> fall through; then 'B ' is the only 'X '"),
        ("Answer: b", None, "lowercase: no letter after 'Answer:', none later -> random.choice"),
        ("(b)", None, "case-sensitive '(X)' / 'X ' / 'X.' -> random.choice"),
        ("**B**", None, "'B*' is none of '(B)', 'B ', 'B.' -> random.choice"),
        ("The answer is B.", "B", "strip('.'), then f'{choice} ' finds 'B '"),
        ("It is DNA.", "A", "f'{choice} ' needs no space before the letter: 'DNA ' holds 'A '"),
        ("A or B", "B", "two 'X ' candidates: `rfind(f' {can} ')`, B is last"),
        ("6 cm", None, "no letter -> random.choice"),
        ("0.499", None, "no letter -> random.choice"),
        ("Yes/No", None, "no letter -> random.choice"),
        ("B", "B", "' B ' after padding"),
        ("the option I pick is option C indeed", "C", "'I ' and 'C ' are both 'X ' candidates; ' C ' occurs last"),
    ],
)
def test_parse(response, expected, why):
    """`parse_multi_choice_response` of mmmu-pro/evaluate.py."""
    assert mmmu_parse_multi_choice(response, OPTIONS, pro=True) == expected, why


def test_differs_from_mmmu_on_bare_letters():
    """MMMU needs ' X ' (space before); MMMU-Pro's 'X ' does not: 'DNA ' reads A only in MMMU-Pro."""
    assert mmmu_parse_multi_choice("It is DNA.", OPTIONS) is None
    assert mmmu_parse_multi_choice("Answer:\nC", OPTIONS) is None  # MMMU has no 'Answer:' step


def test_score_correct_and_parsed_separately():
    """`if parsed_pred == results['answer']`; random.choice -> wrong and unparsed."""
    s = mmmu_pro_score("Thinking...\nAnswer: D", OPTIONS, "D")
    assert (s.score, s.parsed, s.extracted, s.rule) == (1.0, True, "D", OFFICIAL)
    s = mmmu_pro_score("Thinking...\nAnswer: E", OPTIONS, "D")
    assert (s.score, s.parsed, s.extracted) == (0.0, True, "E")
    s = mmmu_pro_score("no idea", OPTIONS, "D")
    assert (s.score, s.parsed, s.extracted) == (0.0, False, None)


def test_pronoun_i_is_option_i():
    """With ten options, f'{choice} ' matches the pronoun: 'I do not know' reads option I (parsed, wrong)."""
    s = mmmu_pro_score("I do not know", OPTIONS, "D")
    assert (s.score, s.parsed, s.extracted) == (0.0, True, "I")


def test_prompts_are_mmmu_pros(tmp_path):
    """infer_transformers.py `construct_prompt` ('A. x' lines + prompts.yaml) and the vision prompt alone."""
    from vlm_opd.eval.benchmarks.mmmu_pro import MMMU_PRO_PROMPTS, MMMUPro, MMMUProVision
    from vlm_opd.eval.fixtures import write_fixture

    std = MMMUPro(write_fixture("mmmu_pro", tmp_path / "s")).load()[0]
    assert std.problem.endswith("I. option I\nJ. option J\n" + MMMU_PRO_PROMPTS["cot"]["standard"])
    vis = MMMUProVision(write_fixture("mmmu_pro_vision", tmp_path / "v"), mode="direct").load()[0]
    assert vis.problem == MMMU_PRO_PROMPTS["direct"]["vision"]
