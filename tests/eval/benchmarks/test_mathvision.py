"""MATH-Vision's official verdicts, derived line by line from mathllm/MATH-V @
1d361180b02cbff417c77c02acf1b4cacf2d55ea: evaluation/evaluate.py (`evaluate`: the `model_answer` block and
`is_equal(gt_answer, model_answer) or is_equal(gt_answer_value, model_answer)`) and evaluation/utils.py
(`find_math_answer`, `_strip_string`, `eval_tuple`, `is_equal`).
"""

import pytest

from vlm_opd.data.example import Example
from vlm_opd.errors import ConfigError
from vlm_opd.eval.benchmarks.mathvision import INSTRUCTION, MathVision, find_math_answer, is_equal, read_answer
from vlm_opd.eval.scoring import OFFICIAL, Extraction

OPTIONS = ["3", "4", "5", "6", "7"]


def mc(answer="C", options=OPTIONS):
    return Example(problem="q", answer=answer, id="1", meta={"options": options})


def free(answer):
    return Example(problem="q", answer=answer, id="1", meta={})


@pytest.mark.parametrize(
    "response, model_answer",
    [
        ("The answer is B.", "b"),  # `model_answer.endswith(f" {c}.")` -> c, then lower-cased
        ("Thus (D).\nThe answer is (B).", "b"),  # `endswith(f" ({c}).")`
        ("C\nbecause ...", "c"),  # `startswith(f"{c}\n")`
        ("(b)", "b"),  # find_math_answer then `.replace('(b)', 'b')`
        ("**B**", "**b**"),  # nothing removes the markdown
        ("Answer:\nC", "answer:c"),  # no rule fires; "\n" and spaces removed by find_math_answer
        ("The final answer is 12. Done", "12"),  # flag "The final answer is", then `.split('. ')[0]`
        ("so x = 5", "5"),  # `ans.split('=')[-1]`
        ("\\boxed{6} cm", "6"),  # the greedy `oxed{(.*)}` match
        ("\\boxed{6 \\text{ units}}", "6"),  # "\\text" and "{units}" removed
        ("\\boxed{6\\text{ cm}}", "6{cm}"),  # "cm" is not among the units find_math_answer drops
        ("6 cm", "6cm"),
        ("So the answer is \\boxed{A} and \\boxed{C}", "c"),  # `count('oxed{') > 1`: the last box
        ("0.5", "\\frac{1}{2}"),  # _strip_string: `if string == "0.5"`
        ("3/4", "\\frac{3}{4}"),  # _strip_string's _fix_a_slash_b
        ("the ratio is 3/4", "theratiois3/4"),  # no flag matches ("is " alone is not one): the whole text
    ],
)
def test_model_answer(response, model_answer):
    """evaluate.py's `model_answer` (before `is_equal`)."""
    assert read_answer(response) == model_answer


@pytest.mark.parametrize(
    "response, example, correct",
    [
        ("(b)", mc("B"), 1.0),  # "b" vs "B": is_equal lower-cases both
        ("b", mc("B"), 1.0),  # a lower-case letter is right
        ("**B**", mc("B"), 0.0),  # "**b**" is neither the letter nor a number
        ("Answer:\nC", mc("C"), 0.0),  # "answer:c"
        ("The answer is C.", mc("C"), 1.0),
        ("5", mc("C"), 1.0),  # the option's value: `is_equal(gt_answer_value, model_answer)`
        ("\\boxed{5.001}", mc("C"), 1.0),  # the value compared after round(x, 2)
        ("(A) or (C)", mc("C"), 0.0),  # two letters: "aorc"
        ("6 cm", free("6"), 0.0),  # units are kept: "6cm" is no number
        ("The answer is 6 cm.", free("6"), 0.0),
        ("\\boxed{6} cm", free("6"), 1.0),
        ("0.499", free("0.5"), 1.0),  # round(0.499, 2) == round(0.5, 2)
        ("3.14159", free("3.14"), 1.0),
        ("3.146", free("3.14"), 0.0),  # round(3.146, 2) == 3.15
        ("\\boxed{\\frac{1}{2}}", free("0.5"), 1.0),  # latex -> number, rounded
        ("\\boxed{2\\sqrt{3}}", free("3.46"), 1.0),
        ("\\boxed{(1,2)}", free("(1, 2)"), 1.0),  # eval_tuple on both sides -> "(1,2)"
        ("\\boxed{(2,1)}", free("(1, 2)"), 0.0),
        ("\\boxed{x+1}", free("x+1"), 1.0),  # `gt_asw.strip() == asw.strip()` before any parsing
        ("\\boxed{1+x}", free("x+1"), 0.0),  # symbols never evaluate to a number
        ("", free("6"), 0.0),  # empty -> False
    ],
)
def test_verdicts(response, example, correct):
    """`is_equal(gt_answer, model_answer) or is_equal(gt_answer_value, model_answer)`."""
    s = MathVision("unused").score(response, example)
    assert (s.score, s.rule) == (correct, OFFICIAL)


def test_is_equal_pieces():
    """utils.py: empty strings are never equal; `round(..., 2)` on numbers; tuple elements rounded."""
    assert not is_equal("", "") and not is_equal("6", "  ")
    assert is_equal("1.004", "1") and not is_equal("1.006", "1")
    assert is_equal("(0.333,1)", "(\\frac{1}{3},1)")
    assert find_math_answer("\\boxed{90^\\circ}") == "90"


def test_parsed_flag():
    assert not MathVision("unused").score("", free("6")).parsed
    assert MathVision("unused").score("6 cm", free("6")).parsed  # read, and wrong


def test_prompt_is_official(tmp_path):
    """models/Qwen-VL.py `geninput`: instruction, question, "\\n", "(A) ..\\n" x5 (only for real options)."""
    from vlm_opd.eval.fixtures import write_fixture

    examples = MathVision(write_fixture("mathvision", tmp_path)).load()
    assert INSTRUCTION.startswith('Please solve the problem step by step and put your answer in one "\\boxed{}".')
    assert examples[2].problem.endswith("What is the length of AB?\n(A) 3\n(B) 4\n(C) 5\n(D) 6\n(E) 7\n")
    assert examples[1].problem.endswith("Which shape comes next?\n")  # letters-only options are not listed
    assert examples[0].problem.startswith(INSTRUCTION)


def test_no_outside_extraction():
    with pytest.raises(ConfigError, match="MathVision: its official protocol has no answer-extraction step"):
        MathVision("unused").score("5", mc(), extraction=Extraction("5", "mine"))
