"""We-Math's official verdicts and four-dimensional metrics, derived line by line from We-Math/We-Math
evaluation/four_dimensional_metrics.py @ 89a15bd19e47a75221eda6b389be2eed77530854 (`load_and_process_data`,
`calculate_metrics`, `compute_final_scores`, `update_main_results_df`) and evaluation/accuracy.py @
681e04046050d7bcdaf40fcdd37f86df8041e68c (S1 / S2 / S3).
"""

import pytest

from vlm_opd.data.example import Example
from vlm_opd.errors import ConfigError
from vlm_opd.eval.benchmarks.wemath import PROMPT, WeMath, read_answer, wemath_four_dimensional
from vlm_opd.eval.scoring import OFFICIAL, Extraction


@pytest.mark.parametrize(
    "response, letter",
    [
        ("Answer:\nC", "C"),  # split('Answer')[-1] -> ":\nC" -> strip, drop ":" -> "C"
        ("<Thought process>: ... <Answer>: <<B>>", "B"),  # ">", "<", ":" removed
        ("Answer: B. Because ...", "B"),  # first character only
        ("B", "B"),  # no "Answer": the whole response
        ("C. 12 cm", "C"),
        ("E", "E"),  # "ABCDEFGH", not only the listed options
        ("(b)", None),  # first character "(" is not a letter
        ("**B**", None),  # "*" is not removed
        ("The answer is B.", None),  # "answer" is lower case: the whole text, first character "T"
        ("b", None),  # lower case is not in "ABCDEFGH"
        ("Answer: b", None),
        ("Answer: 12", None),
        ("Final Answer: The answer is D", None),  # after the last "Answer": "The answer is D" -> "T"
        ("Answer: A\nWait, Answer: C", "C"),  # the last "Answer"
        ("Answer", None),  # nothing after it
        ("A or C", "A"),  # two letters: the first character
    ],
)
def test_read_answer(response, letter):
    """`df['response'].str.split('Answer').str[-1].str.strip().str.replace(r'[>><<:.]', '').str.strip()`,
    then `x[0] if x and x[0] in 'ABCDEFGH' else None`."""
    assert read_answer(response) == letter


def test_score_compares_with_the_answer_letter():
    """`df['joker'] = df['processed_answer'] == df['answer']`; None is wrong and unparsed."""
    ex = Example(problem="q", answer="B", id="1", meta={"options": {"A": "1", "B": "2"}})
    bench = WeMath("unused")
    assert bench.score("Answer: B", ex).to_dict() == {"score": 1.0, "extracted": "B", "parsed": True, "rule": OFFICIAL}
    assert bench.score("Answer: A", ex).score == 0.0
    wrong = bench.score("The answer is B.", ex)
    assert (wrong.score, wrong.parsed) == (0.0, False)
    with pytest.raises(ConfigError, match="WeMath: its official protocol has no answer-extraction step"):
        bench.score("B", ex, extraction=Extraction("B", "mine"))


def test_official_prompt(tmp_path):
    from vlm_opd.eval.fixtures import write_fixture

    ex = WeMath(write_fixture("wemath", tmp_path)).load()[0]
    assert ex.problem == PROMPT.format(question="Step 2steps_1: what is the side length in cm?",
                                       option="A. 1cm; B. 2cm; C. 3cm; D. 4cm; E. No correct answer")
    assert ex.problem.startswith("Now, we require you to solve a multiple-choice math question.")
    assert ex.problem.endswith("<Thought process>: <<your thought process>> <Answer>: <<your option>>")


def test_four_dimensional_by_hand():
    """`calculate_metrics` row filters and `compute_final_scores` rates; RM is a rate over CM + RM."""
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
