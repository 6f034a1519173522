"""The optional LLM judge against a stub OpenAI-compatible server on 127.0.0.1."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vlm_opd.errors import ConfigError
from vlm_opd.eval import JudgeConfig, JudgeError, evaluate
from vlm_opd.eval.fixtures import oracle_generate_fn, write_fixture
from vlm_opd.eval.judge import Judge
from vlm_opd.rewards import extract_final_answer


class StubJudge(BaseHTTPRequestHandler):
    """Extracts like a careful grader would, and compares standard vs model answers for MathVerse."""

    requests: list = []
    fail = False

    def do_POST(self):  # noqa: N802 (http.server naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if type(self).fail:
            self.send_response(500)
            self.end_headers()
            return
        prompt = body["messages"][0]["content"]
        if "[Standard Answer]" in prompt:  # MathVerse's official scoring prompt: the last example is ours
            gold = re.findall(r"\[Standard Answer\]: (.*)", prompt)[-1].strip()
            got = re.findall(r"\[Model_answer\] : (.*)", prompt)[-1].strip()
            reply = "1" if gold == got else "0"
        else:  # an official extraction prompt: the response is the last block before "Extracted answer: "
            body = prompt.rstrip()
            body = body[: body.lower().rfind("extracted answer:")].rstrip()
            if prompt.startswith("I am providing you"):  # MathVerse: "Model response: '<response>'"
                response = body.rsplit("Model response:", 1)[1].strip().strip("'")
            else:  # MathVista: "<query>\n\n<response>"
                response = body.rsplit("\n\n", 1)[1]
            reply = extract_final_answer(response) or ""
            reply = re.sub(r"^\((\w)\).*", r"\1", reply)  # "(C) 60°" -> "C"
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    StubJudge.requests = []
    StubJudge.fail = False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), StubJudge)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


RIGHT = {"mathvista": {"1", "3"}, "mathverse": {"1", "2", "3"}, "ai2d": {"1"}}


def test_judged_evaluation_records_rule_and_memoises(server, tmp_path, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "secret")
    specs = [f"{n}:{write_fixture(n, tmp_path / 'fx')}" for n in ("mathvista", "mathverse", "ai2d")]
    cfg = JudgeConfig(url=server, model="stub-grader", api_key_env="STUB_KEY", max_retries=0)
    gen = oracle_generate_fn(lambda ex: ex.id in RIGHT[ex.meta["benchmark"]])
    res = evaluate(specs, gen, k=1, judge=cfg, out_dir=tmp_path / "out", progress=False)

    b = res["benchmarks"]
    assert b["mathvista"]["results"]["avg@1"]["rules"] == {"judge:stub-grader": 4}
    assert b["mathverse"]["results"]["avg@1"]["rules"] == {"judge:stub-grader": 4}
    assert b["ai2d"]["results"]["avg@1"]["rules"] == {"official": 3}  # AI2D's protocol has no judge
    assert b["mathvista"]["results"]["avg@1"]["score"] == pytest.approx(50.0)
    assert b["mathverse"]["results"]["avg@1"]["score"] == pytest.approx(75.0)
    assert res["settings"]["judge"] == "stub-grader"

    n_requests = len(StubJudge.requests)
    # MathVista: 4 extractions; MathVerse: extract then judge for 4 items, but items 1 and 3 send
    # identical prompts (same question and answer in two versions), which are asked once.
    assert n_requests == 4 + 2 * 4 - 2
    assert len({json.dumps(r["body"]) for r in StubJudge.requests}) == n_requests
    first = StubJudge.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer secret"
    assert first["body"]["model"] == "stub-grader" and first["body"]["temperature"] == 0

    # Rerunning resumes from the caches: no generation and no judge call is repeated.
    gen2 = oracle_generate_fn()
    again = evaluate(specs, gen2, k=1, judge=cfg, out_dir=tmp_path / "out", progress=False)
    assert gen2.calls == [] and len(StubJudge.requests) == n_requests
    assert again["benchmarks"]["mathverse"]["results"]["avg@1"]["score"] == pytest.approx(75.0)


def test_judge_failures_are_clear(server, tmp_path, monkeypatch):
    StubJudge.fail = True
    judge = Judge(JudgeConfig(url=server + "/chat/completions", model="m", api_key_env=None, max_retries=0))
    with pytest.raises(JudgeError, match=r"judge m at http://127.0.0.1:\d+/v1/chat/completions failed after 1 attempt"):
        judge.complete("hello")
    monkeypatch.delenv("MISSING_KEY", raising=False)
    with pytest.raises(ConfigError, match="MISSING_KEY"):
        Judge(JudgeConfig(url=server, model="m", api_key_env="MISSING_KEY")).complete("hello")
    with pytest.raises(ConfigError, match="http"):
        JudgeConfig(url="127.0.0.1:8000", model="m")
