"""OCRBench's rule: the scoring block of Yuliang-Liu/MultimodalOCR OCRBench/scripts/*.py (qwenvl.py @ f5cbec6)."""

import pytest

from vlm_opd.data.example import Example
from vlm_opd.eval.benchmarks.ocrbench import OCRBench, ocrbench_match
from vlm_opd.eval.scoring import OFFICIAL


@pytest.mark.parametrize(
    "prediction, answers, dataset, expected, why",
    [
        ("The word is chelsea.", ["CHELSEA"], "IIIT5K", True, "`answer.lower().strip()` in `predict.lower()`"),
        ("Chelsey", ["CHELSEA"], "IIIT5K", False, "not a substring"),
        ("chel sea", ["CHELSEA"], "IIIT5K", False, "only newlines become spaces; spaces are kept"),
        ("CHEL\nSEA", ["chel sea"], "IIIT5K", True, "`.replace('\\n', ' ')` on the prediction"),
        ("invoice 2041", ["INV-2041", "2041"], "docVQA", True, "`for j in range(len(answers))`: any answer"),
        ("6 cm", ["6"], "docVQA", True, "substring"),
        ("0.499", ["0.49"], "ChartQA", True, "substring, no number parsing"),
        ("0.499", ["0.5"], "ChartQA", False, "no rounding"),
        ("Yes/No", ["yes"], "textVQA", True, "substring after lower-casing"),
        ("(b)", ["B"], "textVQA", True, "substring after lower-casing"),
        ("x^{2}+1", ["x ^ { 2 } + 1"], "HME100k", True, "HME100k: every space removed on both sides"),
        ("X^{2}+1", ["x ^ { 2 } + 1"], "HME100k", False, "HME100k keeps case"),
        ("<think>maybe CHELSEA</think> It says CHELSEY", ["CHELSEA"], "IIIT5K", True, "the output is scored as is"),
        ("anything", ["  "], "IIIT5K", True, "an empty reference after strip is in every string"),
        ("CHELSEA", "chelsea", "IIIT5K", True, "a single answer string (the `else` branch)"),
    ],
)
def test_match(prediction, answers, dataset, expected, why):
    """The per-item block: `if answer in predict: data[i]['result'] = 1`."""
    assert ocrbench_match(prediction, answers, dataset) is expected, why


def test_score_and_points():
    bench = OCRBench()
    e = Example(problem="q", images=[], answer="CHELSEA", id="0",
                meta={"answers": ["CHELSEA"], "dataset": "IIIT5K", "question_type": "Regular Text Recognition"})
    right, wrong, empty = (bench.score(c, e) for c in ("chelsea", "chelsey", ""))
    assert (right.score, right.parsed, right.rule) == (1.0, True, OFFICIAL)
    assert (wrong.score, wrong.parsed) == (0.0, True)
    assert (empty.score, empty.parsed) == (0.0, False)
    metrics, counts = bench.run_metrics([e, e, e], [right, wrong, empty])
    assert counts["points"] == 1 and counts["points/Regular Text Recognition"] == 1
    assert metrics["accuracy"] == pytest.approx(100 / 3)
