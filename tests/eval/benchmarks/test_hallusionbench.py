"""HallusionBench: the official judge step and metrics (tianyi-lab/HallusionBench utils.py @ 89db601),
and VLMEvalKit's YOrN_Extraction rule path (yorn.py @ 0c7163c, smp/misc.py @ 4e85dcd)."""

import sys
from pathlib import Path

import pytest

from vlm_opd.data.example import Example
from vlm_opd.errors import DataError
from vlm_opd.eval.benchmarks.hallusionbench import (
    HallusionBench,
    hallusion_judge_prompt,
    hallusion_judge_verdict,
    hallusion_metrics,
    process_punctuation,
    yorn_extraction,
)
from vlm_opd.eval.scoring import OFFLINE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_judge import FakeJudge  # noqa: E402


@pytest.mark.parametrize(
    "output, expected, why",
    [
        ("Yes", "Yes", "'yes' in words and 'no' not in words"),
        ("No.", "No", "periodStrip deletes the final '.'"),
        ("Yes, it is.", "Yes", "', ' present -> ',' deleted"),
        ("The answer is yes.", "Yes", "one 'yes' word"),
        ("Answer:\nYes", "Yes", "':' is not in punct but sits on 'answer:', not on 'yes'"),
        ("Yes/No", "Unknown", "'/' has no space next to it -> becomes a space: 'yes no' holds both"),
        ("yes / no", "Unknown", "'/ ' present -> '/' deleted: both words remain"),
        ("**Yes**", "Unknown", "'*' is not in punct: the word is '**yes**'"),
        ("yes:", "Unknown", "':' is not in punct: the word is 'yes:'"),
        ("No, 1,000 is not larger", "No", "a digit-comma-digit deletes every mark; 'no' remains"),
        ("Yes. Although at first glance one might say no.", "Unknown", "both words -> Unknown (no first-word rule)"),
        ("Nothing here", "Unknown", "'nothing' is not 'no'"),
        ("", "Unknown", "no words"),
        ("6 cm", "Unknown", "no yes/no word"),
        ("0.499", "Unknown", "no yes/no word"),
        ("yes" + "." * 32, "Yes", "periodStrip removes 32 periods (re.UNICODE passed as the count)"),
        ("yes" + "." * 33, "Unknown", "the 33rd period stays: the word is 'yes.'"),
    ],
)
def test_yorn_extraction(output, expected, why):
    """`YOrN_Extraction`: lower, `process_punctuation`, split, then the yes-xor-no test."""
    assert yorn_extraction(output) == expected, why


def test_process_punctuation_checks_the_original_text():
    """The delete-or-space test for each mark looks at `inText`, not the text already edited."""
    assert process_punctuation("a-b c") == "a b c"
    assert process_punctuation("a-b - c") == "ab  c"


def ex(category="VD", figure_id="1", answer="yes", details="Yes, it is."):
    meta = {"category": category, "subcategory": "s", "set_id": "0", "figure_id": figure_id, "question_id": "0",
            "visual_input": "1", "question": "Is it so?", "gt_answer_details": details, "where": "HallusionBench row 0"}
    return Example(problem="Is it so?", images=[], answer=answer, id="x", meta=meta)


def test_rule_path_is_offline_and_unknown_is_wrong_even_without_figure():
    """VLMEvalKit scores `extracted == answer`: Unknown is wrong, also for VS figure-0 questions."""
    bench = HallusionBench()
    s = bench.score("Yes, clearly.", ex())
    assert (s.score, s.parsed, s.extracted, s.rule) == (1.0, True, "yes", OFFLINE)
    s = bench.score("Yes/No", ex(category="VS", figure_id="0"))
    assert (s.score, s.parsed, s.extracted, s.rule) == (0.0, False, None, OFFLINE)
    s = bench.score("No.", ex())
    assert (s.score, s.parsed) == (0.0, True)



@pytest.mark.parametrize(
    "reply, verdict, why",
    [
        ("Incorrect.", 0, "`if 'incorrect' in output_text.lower()`, checked first"),
        ("correct", 1, "`elif 'correct' in output_text.lower()`"),
        ("The prediction is not correct", 1, "'correct' is a substring; 'incorrect' is absent"),
        ("unclear", 2, "neither word -> '2'"),
    ],
)

def test_judge_verdict(reply, verdict, why):
    """`evaluate_by_chatgpt`'s reading of the judge's reply."""
    assert hallusion_judge_verdict(reply) == verdict, why


def test_judge_path_prompt_and_assign_correctness():
    """The official prompt, verbatim; `assign_correctness`: 'unclear' is right only for VS figure 0."""
    judge = FakeJudge("unclear", repeat=True)
    s = HallusionBench().score("I am not sure.", ex(category="VS", figure_id="0"), judge)
    assert (s.score, s.extracted, s.rule) == (1.0, "unclear", "judge:fake")
    s = HallusionBench().score("I am not sure.", ex(), judge)
    assert s.score == 0.0
    assert judge.prompts[0] == (
        "Imagine you are an intelligent teacher. Thoroughly read the question, reference answer and the prediction "
        "answer to ensure a clear understanding of the information provided. Assess the correctness of the "
        "predictions. If the prediction answer does not conflict with the reference answer, please generate "
        "\u201ccorrect\u201d. If the prediction answer conflict with the reference answer, please generate "
        "\u201cincorrect\u201d. If the prediction answer is unclear about the answer, please generate \"unclear\". "
        "\n\n Question:Is it so?\nReference answer: Yes, it is.\nPrediction answer:I am not sure.\nOutput:"
    )
    assert hallusion_judge_prompt("q", "r", "p").endswith("Question:q\nReference answer: r\nPrediction answer:p\nOutput:")
    s = HallusionBench().score("Yes", ex(), FakeJudge("Correct", repeat=True))
    assert (s.score, s.parsed, s.extracted) == (1.0, True, "correct")


def test_judge_needs_the_reference_details():
    with pytest.raises(DataError, match="HallusionBench row 0.*gt_answer_details"):
        HallusionBench().score("Yes", ex(details=None), FakeJudge("correct", repeat=True))


def test_metrics_by_hand():
    """`get_eval_all` (aAcc), `get_eval_fig` (fAcc, VS figure 0 skipped), `get_eval_pair_all` (qAcc, per pair)."""

    def row(cat, fig, q, set_id="0"):
        return {"category": cat, "subcategory": "s", "set_id": set_id, "figure_id": str(fig), "question_id": str(q)}

    rows = [row("VD", 0, 0), row("VD", 0, 1), row("VD", 1, 0), row("VD", 1, 1), row("VS", 0, 0, "9")]
    m = hallusion_metrics(rows, [1, 1, 1, 0, 0])
    assert m["aAcc"] == pytest.approx(60.0)
    assert m["fAcc"] == pytest.approx(50.0)  # (VD,0) all right, (VD,1) not; VS figure 0 left out
    assert m["qAcc"] == pytest.approx(100.0 / 3)  # q0 right on both figures; q1 and VS q0 not


def test_bad_figure_id_names_benchmark_and_row(tmp_path):
    """`assign_correctness` calls int(figure_id): a non-number is refused at load time, naming the row."""
    import json

    from vlm_opd.eval.fixtures import write_fixture

    path = write_fixture("hallusionbench", tmp_path)
    rows = json.loads((path / "HallusionBench.json").read_text())
    rows[2]["figure_id"] = "one"
    (path / "HallusionBench.json").write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"HallusionBench row 2.*figure_id"):
        HallusionBench(path).load()


def test_judged_run_end_to_end(tmp_path, monkeypatch):
    """`vlm-opd eval` with a judge: every item goes through the official prompt; a judge that always
    answers 'unclear' leaves only the VS figure-0 question right (`assign_correctness`)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from vlm_opd.eval import JudgeConfig, evaluate
    from vlm_opd.eval.fixtures import oracle_generate_fn, write_fixture

    prompts = []

    class Unclear(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            prompts.append(body["messages"][0]["content"])
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": "Unclear."}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Unclear)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        cfg = JudgeConfig(url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", model="stub", api_key_env=None,
                          max_retries=0)
        spec = f"hallusionbench:{write_fixture('hallusionbench', tmp_path / 'fx')}"
        res = evaluate([spec], oracle_generate_fn(), k=1, judge=cfg, out_dir=tmp_path / "out", progress=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
    summary = res["benchmarks"]["hallusionbench"]["results"]["avg@1"]
    assert summary["rules"] == {"judge:stub": 5}
    assert summary["metrics"]["aAcc"] == pytest.approx(20.0)
    assert len(prompts) == 5 and all(p.endswith("\nOutput:") and "\nReference answer: " in p for p in prompts)
