"""Every bad input is one line (issue 18, cases 1c, 6-10, 12, 14): eval --out that holds other files or is a
file, damaged eval cache lines, prompts longer than the context, identity degradations, duplicate YAML
keys, re-logged skipped rows; and the judge warns before sending a key over plain http."""

from __future__ import annotations

import json

import pytest
import yaml

from vlm_opd.cli import main
from vlm_opd.config import config_from_dict, load_config
from vlm_opd.errors import ConfigError, DataError
from vlm_opd.eval.runner import CompletionCache
from vlm_opd.train import trainer as trainer_mod


@pytest.fixture
def local_bench(tmp_path):
    from PIL import Image

    Image.new("RGB", (56, 56), "white").save(tmp_path / "im.png")
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps({"problem": f"<image> What is {i} + 1?", "images": ["im.png"],
                                        "answer": str(i + 1)}) + "\n" for i in range(2)))
    return path


def _eval_args(model, bench, out):
    return ["eval", "--model", str(model), "--benchmarks", f"local:{bench}", "--k", "1", "--max-new-tokens", "4",
            "--batch-size", "2", "--out", str(out), "--no-progress"]


# ---- case 1c: eval --out into an unrelated directory ---------------------------------------------------


def test_case01c_eval_out_into_unrelated_directory_is_refused(rh, tmp_path, tiny_qwen2vl_dir, local_bench, cli_error):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("my report")
    (out / "results.json").write_text('{"mine": true}')
    before = rh.tree_digest(out)
    msg = cli_error(*_eval_args(tiny_qwen2vl_dir, local_bench, out))
    assert "not this eval's" in msg and "report.md" in msg and "--overwrite" in msg
    assert rh.tree_digest(out) == before
    assert main([*_eval_args(tiny_qwen2vl_dir, local_bench, out), "--overwrite"]) == 0
    assert "mine" not in json.loads((out / "results.json").read_text())
    assert main(_eval_args(tiny_qwen2vl_dir, local_bench, out)) == 0  # its own files: a rerun resumes


def test_eval_out_is_locked_while_an_eval_runs(tmp_path, tiny_qwen2vl_dir, local_bench, cli_error):
    import socket
    import subprocess
    import sys
    import time

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        out = tmp_path / "out"
        out.mkdir()
        (out / ".vlm-opd.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid,
                                                       "started": time.time()}))
        assert f"--out {out} is in use by pid {holder.pid}" in cli_error(*_eval_args(tiny_qwen2vl_dir, local_bench, out))
    finally:
        holder.kill()
        holder.wait()


# ---- case 6: damaged completion-cache lines ----------------------------------------------------------------


HEADER = {"format": 1, "benchmark": "b", "mode": "avg@1", "k": 1, "temperature": 1.0, "greedy": False, "seed": 0}
GOOD = json.dumps({"id": "a", "fingerprint": "f", "completions": ["x"]})


@pytest.mark.parametrize("case,line,expected", [
    ("case06a_not_an_object", b"[1, 2]", "line 2: expected a JSON object, got list"),
    ("case06b_object_without_id", b'{"fingerprint": "f", "completions": ["x"]}', "line 2: expected an object with a string id"),
    ("case06c_non_utf8_byte", b'{"id": "a\xff", "fingerprint": "f", "completions": ["x"]}', "line 2 is not UTF-8"),
    ("completions_not_strings", b'{"id": "a", "fingerprint": "f", "completions": [1]}', "completions must be a list of strings"),
])
def test_damaged_cache_line_is_one_error_naming_file_and_line(tmp_path, case, line, expected):
    path = tmp_path / "c.jsonl"
    path.write_bytes(json.dumps({"header": HEADER}).encode() + b"\n" + line + b"\n" + GOOD.encode() + b"\n")
    with pytest.raises(DataError, match=expected) as err:
        CompletionCache(path, HEADER)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_torn_last_line_is_still_dropped_and_counted(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(json.dumps({"header": HEADER}).encode() + b"\n" + GOOD.encode() + b'\n{"id": "b", "fing\xe2')
    cache = CompletionCache(path, HEADER)
    assert list(cache.records) == ["a"] and cache.discarded_lines == 1


# ---- case 7: eval --out that is a file ----------------------------------------------------------------------


def test_case07cd_eval_out_that_is_a_file_or_under_a_file(tmp_path, tiny_qwen2vl_dir, local_bench, cli_error):
    f = tmp_path / "afile"
    f.write_text("x")
    assert f"--out {f} is a file" in cli_error(*_eval_args(tiny_qwen2vl_dir, local_bench, f))
    assert f"its parent {f} is a file" in cli_error(*_eval_args(tiny_qwen2vl_dir, local_bench, f / "sub"))
    assert f.read_text() == "x"


# ---- cases 8 and 9: prompts longer than the model can take --------------------------------------------------


def _long_rows(tmp_path, n_chars):
    rows = [{"problem": "What is 2 + 2?", "answer": "4", "solution": "\\boxed{4}"}] * 3
    rows.insert(1, {"problem": ("7 " * (n_chars // 2)) + "What is the sum?", "answer": "1", "solution": "\\boxed{1}"})
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _no_steps(monkeypatch):
    def never(*a, **k):
        raise AssertionError("a training step ran")

    for method in list(trainer_mod.STEP_FUNCTIONS):
        monkeypatch.setitem(trainer_mod.STEP_FUNCTIONS, method, never)


def test_case08_a_50000_character_problem_is_refused_before_any_forward(rh, tmp_path, tiny_qwen2vl_dir,
                                                                        tiny_qwen25vl_dir, monkeypatch, cli_error):
    data = _long_rows(tmp_path, 50_000)
    _no_steps(monkeypatch)  # refused before the first rollout, where the OOM happened
    cfg = rh.write_cfg(tmp_path / "c.yaml", rh.tiny_cfg(tmp_path / "run", tiny_qwen2vl_dir, tiny_qwen25vl_dir,
                                                         data={"train": str(data)}))
    msg = cli_error("train", str(cfg), "--no-progress")
    assert "long.jsonl" in msg and "exceeds the limit of 4090" in msg and "skip_bad_rows" in msg


def test_case08_with_skip_bad_rows_the_long_prompt_is_a_counted_skip(rh, tmp_path, tiny_qwen2vl_dir):
    data = _long_rows(tmp_path, 50_000)
    cfg = rh.tiny_cfg(tmp_path / "run", tiny_qwen2vl_dir, data={"train": str(data), "skip_bad_rows": True}, steps=1)
    trainer_mod.train(config_from_dict(cfg), progress=False)
    (line,) = (tmp_path / "run" / "skipped_rows.jsonl").read_text().splitlines()
    assert json.loads(line)["location"] == "long.jsonl:2" and "exceeds the limit" in line


def test_case09_prompt_beyond_max_position_embeddings_is_refused(rh, tmp_path, tiny_qwen2vl_dir, tiny_qwen25vl_dir,
                                                                 monkeypatch):
    data = _long_rows(tmp_path, 9_000)  # ~4,500 digit tokens: over the tiny models' 4,096 positions
    _no_steps(monkeypatch)
    cfg = rh.tiny_cfg(tmp_path / "run", tiny_qwen2vl_dir, tiny_qwen25vl_dir, data={"train": str(data)})
    with pytest.raises(DataError, match=r"the 4096-token context of .* minus rollout.max_new_tokens=6"):
        trainer_mod.train(config_from_dict(cfg), progress=False)
    # an explicit limit applies too
    cfg["data"]["max_prompt_tokens"] = 40
    cfg["data"]["train"] = "synthetic:4"
    with pytest.raises(DataError, match="exceeds the limit of 40 .data.max_prompt_tokens"):
        trainer_mod.train(config_from_dict(cfg), progress=False)


# ---- case 10: a degradation that leaves the image unchanged --------------------------------------------------


def test_case10_pixelate_ratio_one_is_refused(rh, tmp_path, tiny_qwen2vl_dir, tiny_qwen25vl_dir, cli_error):
    cfg = rh.write_cfg(tmp_path / "c.yaml", rh.tiny_cfg(tmp_path / "run", tiny_qwen2vl_dir, tiny_qwen25vl_dir,
                                                         method="va_opd"))
    msg = cli_error("train", str(cfg), "va_opd.pixelate_ratio=1")
    assert "va_opd.pixelate_ratio" in msg and "unchanged" in msg
    assert "papo.mask_prob" in cli_error("train", str(cfg), "papo.mask_prob=0")
    assert not (tmp_path / "run").exists()


# ---- case 12: duplicate YAML keys --------------------------------------------------------------------------


def test_case12_duplicate_yaml_keys_are_refused(tmp_path, cli_error):
    path = tmp_path / "c.yaml"
    path.write_text("method: opd\noptim:\n  lr: 1.0e-5\n  lr: 1.0e-3\n")
    msg = cli_error("train", str(path))
    assert f"{path}: duplicate key 'lr' at line 4 (first at line 3)" in msg
    path.write_text("method: opd\nsteps: 3\nmethod: va_opd\n")
    assert "duplicate key 'method' at line 3 (first at line 1)" in cli_error("train", str(path))
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        load_config(None, ["data.field_map={a: x, a: y}"])
    # YAML merge keys may still be overridden
    path.write_text("x: &base {lr: 1.0}\noptim:\n  <<: *base\n  lr: 2.0\n")
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == 2.0
    from vlm_opd.config import read_yaml

    assert read_yaml(path)["optim"] == {"lr": 2.0}


# ---- case 14: skipped_rows.jsonl describes one load ------------------------------------------------------------


def test_case14_rerun_does_not_append_the_same_skipped_rows_again(rh, tmp_path, tiny_qwen2vl_dir):
    from PIL import Image

    Image.new("RGB", (56, 56), "white").save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    rows = [{"problem": "<image> What?", "images": ["ok.png"], "answer": "1", "solution": "\\boxed{1}"}] * 3
    rows.insert(1, {"problem": "<image> What?", "images": ["bad.png"], "answer": "2", "solution": "x"})
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = rh.tiny_cfg(tmp_path / "run", tiny_qwen2vl_dir, steps=3, checkpoint_every=1,
                      data={"train": str(data), "skip_bad_rows": True})
    trainer_mod.train(config_from_dict(cfg), progress=False)
    trainer_mod.train(config_from_dict({**cfg, "resume": "latest"}), progress=False)
    skipped = (tmp_path / "run" / "skipped_rows.jsonl").read_text().splitlines()
    assert len(skipped) == 1 and "bad.png" in skipped[0]


# ---- also noted: the judge key over plain http ------------------------------------------------------------------


def test_judge_warns_when_the_key_goes_over_plain_http(recwarn):
    from vlm_opd.eval.judge import Judge, JudgeConfig

    with pytest.warns(UserWarning, match="plain http.*OPENAI_API_KEY.*unencrypted to judge.example.com"):
        Judge(JudgeConfig(url="http://judge.example.com/v1", model="m"))
    Judge(JudgeConfig(url="https://judge.example.com/v1", model="m"))
    Judge(JudgeConfig(url="http://localhost:8000/v1", model="m"))
    Judge(JudgeConfig(url="http://judge.example.com/v1", model="m", api_key_env=None))
    assert not [w for w in recwarn if "plain http" in str(w.message)]
