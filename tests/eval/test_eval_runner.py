"""The avg@k runner end to end on every fixture: known scores, report, resume without double counting."""

import json
import re

import pytest

from vlm_opd.errors import ConfigError, DataError, ModelError
from vlm_opd.eval import evaluate
from vlm_opd.eval.fixtures import oracle_generate_fn, write_all_fixtures

# Items the fake model answers correctly, per benchmark; every other item gets a wrong answer.
RIGHT = {
    "wemath": {"1@2steps_1", "1@2steps_2", "1@2steps_multi", "2@2steps_multi"},
    "mathvista": {"1", "3"},
    "mathverse": {"1", "2", "3"},
    "hallusionbench": {"VD_figure_0_0_0", "VD_figure_0_0_1", "VD_figure_0_1_0"},
    "ai2d": {"1"},
    "mmmu": {"validation_Math_1", "validation_Physics_3", "validation_Finance_4"},
    "mmstar": {"0", "2"},
    "ocrbench": {"0", "2"},
    "mmmu_pro": {"test_Math_0", "test_Math_1", "test_Math_2"},
    "mmmu_pro_vision": set(),
    "mathvision": {"1", "2", "3", "4"},
    "logicvista": {"v1_1"},
    "local": {"loc-0", "loc-2"},
}

# Worked out by hand from RIGHT and each official rule.
EXPECTED = {
    "wemath": 50.0,  # strict score: group 1 complete mastery, group 2 rote memorisation -> (2 - 1) / 2
    "mathvista": 50.0,
    "mathverse": 75.0,
    "hallusionbench": 60.0,  # aAcc
    "ai2d": 100 / 3,
    "mmmu": 75.0,
    "mmstar": 200 / 3,
    "ocrbench": 50.0,
    "mmmu_pro": 100.0,
    "mmmu_pro_vision": 0.0,
    "mathvision": 100.0,
    "logicvista": 25.0,
    "local:eval.jsonl": 200 / 3,
}


def oracle():
    return oracle_generate_fn(lambda ex: ex.id in RIGHT[ex.meta["benchmark"]])


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    return write_all_fixtures(tmp_path_factory.mktemp("fixtures"))


def _all_numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _all_numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_end_to_end_known_scores(specs, tmp_path):
    gen = oracle()
    res = evaluate(specs, gen, k=2, greedy_pass1=True, batch_size=2, out_dir=tmp_path, progress=False)
    assert res["modes"] == ["avg@2", "greedy"]
    for key, expected in EXPECTED.items():
        for mode in ("avg@2", "greedy"):
            r = res["benchmarks"][key]["results"][mode]
            assert r["score"] == pytest.approx(expected), (key, mode, r["metrics"])
            assert all(0.0 <= v <= 100.0 for v in r["metrics"].values()), (key, r["metrics"])
    bench = res["benchmarks"]
    hb = bench["hallusionbench"]["results"]["avg@2"]["metrics"]
    assert hb["fAcc"] == pytest.approx(50.0) and hb["qAcc"] == pytest.approx(100 / 3)
    mv = bench["mathverse"]["results"]["avg@2"]["metrics"]
    assert mv["acc/Text Dominant"] == pytest.approx(100.0) and mv["acc/Vision Only"] == pytest.approx(50.0)
    wm = bench["wemath"]["results"]["avg@2"]["metrics"]
    assert wm["accuracy"] == pytest.approx(400 / 6) and wm["RM_strict"] == pytest.approx(50.0)
    assert bench["ocrbench"]["results"]["avg@2"]["counts"]["points"] == pytest.approx(2.0)
    # LogicVista's wrong answers name no option: 3 items x 2 samples unparsed, and 3 greedy ones.
    assert bench["logicvista"]["results"]["avg@2"]["n_unparsed"] == 6
    assert bench["logicvista"]["results"]["greedy"]["n_unparsed"] == 3
    assert bench["mmmu"]["results"]["avg@2"]["n_unparsed"] == 0

    groups = res["summary"]["avg@2"]["groups"]
    assert groups["Math"]["average"] == pytest.approx((50 + 50 + 75) / 3)
    assert groups["Visual"]["average"] == pytest.approx((60 + 100 / 3 + 75 + 200 / 3 + 50) / 5)
    assert groups["VOLD"]["average"] == pytest.approx((100 + 0 + 100 + 25) / 4)
    assert groups["Visual"]["benchmarks"] == ["hallusionbench", "ai2d", "mmmu", "mmstar", "ocrbench"]

    # Per item: id, completions, extracted answers, scores and the rule that scored them.
    item = next(i for i in bench["mathvista"]["items"] if i["id"] == "1")
    m = item["modes"]["avg@2"]
    assert len(m["completions"]) == 2 and m["scores"] == [1.0, 1.0] and m["rule"] == ["offline-rule", "offline-rule"]
    assert m["extracted"] == ["60°", "60°"]

    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["summary"]["avg@2"]["scores"]["mathvista"] == pytest.approx(50.0)
    report = (tmp_path / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| Mode"))
    assert "| WeMath | MathVista | MathVerse | Math Avg | HalluB | AI2D | MMMU | MMStar | OCRBench | Visual Avg |" in header
    row = next(line for line in report.splitlines() if line.startswith("| avg@2"))
    numbers = re.sub("[\u2020\u2021\u00a7*]", "", row)  # markers of numbers not comparable with the papers
    assert numbers.startswith("| avg@2 | 50.0 | 50.0 | 75.0 | 58.3 | 60.0 | 33.3 | 75.0 | 66.7 | 50.0 | 57.0 |")
    assert "## Unparsed answers" in report and "| LogicVista | avg@2 | 6 | 8 | offline-rule (8) |" in report
    for number in re.findall(r"\| (\d+\.\d) ", report):
        assert 0.0 <= float(number) <= 100.0


def test_generate_fn_receives_settings(specs, tmp_path):
    seen = []

    def gen(examples, k, temperature, greedy, seed):
        seen.append((k, temperature, greedy, seed))
        return [["The answer is \\boxed{1}"] * k for _ in examples]

    evaluate([s for s in specs if s.startswith("ai2d:")], gen, k=3, temperature=0.7, greedy_pass1=True,
             batch_size=2, out_dir=tmp_path, progress=False, seed=5)
    sampled = [s for s in seen if not s[2]]
    greedy = [s for s in seen if s[2]]
    assert [(k, t) for k, t, _, _ in sampled] == [(3, 0.7), (3, 0.7)]  # 3 items in batches of 2
    assert [(k, t) for k, t, _, _ in greedy] == [(1, 0.0), (1, 0.0)]
    assert len({s[3] for s in seen}) == 4  # each batch has its own seed


def test_avg_at_k_averages_samples(specs, tmp_path):
    def gen(examples, k, temperature, greedy, seed):
        # Sample 0 right, the other three wrong: avg@4 of a perfect-then-wrong model is 25.
        return [[f"Answer: {ex.answer}"] + ["Answer: Z"] * (k - 1) for ex in examples]

    res = evaluate([s for s in specs if s.startswith("mmstar:")], gen, k=4, out_dir=tmp_path, progress=False)
    r = res["benchmarks"]["mmstar"]["results"]["avg@4"]
    assert r["score"] == pytest.approx(25.0)
    assert r["score_std_over_runs"] == pytest.approx(43.30127, rel=1e-4)  # runs score 100, 0, 0, 0


class Interrupt(Exception):
    pass


def test_resume_after_interruption_does_not_regenerate_or_double_count(specs, tmp_path):
    chosen = [s for s in specs if s.split(":")[0] in ("mathvista", "hallusionbench", "mmmu")]
    reference = evaluate(chosen, oracle(), k=2, batch_size=2, out_dir=tmp_path / "clean", progress=False)

    first = oracle()
    calls = {"n": 0}

    def crashing(examples, k, temperature, greedy, seed):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Interrupt("killed")
        return first(examples, k, temperature, greedy, seed)

    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        evaluate(chosen, crashing, k=2, batch_size=2, out_dir=out, progress=False)
    done_before = {i for batch in first.calls for i in batch}
    assert len(done_before) == 6  # three batches of two made it to the cache

    # A kill in the middle of a write leaves a torn last line; it is dropped and regenerated.
    cache = out / "cache" / "hallusionbench.avg2_t1.jsonl"
    with cache.open("a") as f:
        f.write('{"id": "VD_figure_0_1_1", "fingerprint": "ab')

    second = oracle()
    res = evaluate(chosen, second, k=2, batch_size=2, out_dir=out, progress=False)
    redone = [i for batch in second.calls for i in batch]
    assert len(redone) == len(set(redone)) == 13 - 6  # only the missing items, each once
    assert not set(redone) & done_before
    assert res["benchmarks"]["hallusionbench"]["results"]["avg@2"]["cache"]["discarded_torn_lines"] == 1
    for key in ("mathvista", "hallusionbench", "mmmu"):
        assert res["benchmarks"][key]["results"]["avg@2"]["score"] == reference["benchmarks"][key]["results"]["avg@2"]["score"]
        assert res["benchmarks"][key]["results"]["avg@2"]["n_completions"] == 2 * res["benchmarks"][key]["n_items"]
        lines = (out / "cache" / f"{key}.avg2_t1.jsonl").read_text().splitlines()
        assert len(lines) == 1 + res["benchmarks"][key]["n_items"]  # header + one record per item

    third = oracle()
    evaluate(chosen, third, k=2, batch_size=2, out_dir=out, progress=False)
    assert third.calls == []  # everything cached


def test_other_settings_keep_separate_caches(specs, tmp_path):
    chosen = [s for s in specs if s.startswith("ai2d:")]
    evaluate(chosen, oracle(), k=2, out_dir=tmp_path, progress=False)
    gen = oracle()
    res = evaluate(chosen, gen, k=3, out_dir=tmp_path, progress=False)
    assert sum(len(b) for b in gen.calls) == 3  # k=3 is a new setting: generated afresh
    assert res["benchmarks"]["ai2d"]["results"]["avg@3"]["n_completions"] == 9
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["ai2d.avg2_t1.jsonl", "ai2d.avg3_t1.jsonl"]

    # A cache whose header disagrees with its file name is refused, not mixed in.
    path = tmp_path / "cache" / "ai2d.avg3_t1.jsonl"
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    header["header"]["temperature"] = 0.5
    path.write_text("\n".join([json.dumps(header)] + lines[1:]) + "\n")
    with pytest.raises(DataError, match="was written with settings"):
        evaluate(chosen, oracle(), k=3, out_dir=tmp_path, progress=False)
    # Another seed would sample other completions: the k=2 cache is refused rather than reused.
    with pytest.raises(DataError, match=r"'seed': 0.*this run uses.*'seed': 1"):
        evaluate(chosen, oracle(), k=2, seed=1, out_dir=tmp_path, progress=False)


def test_changed_prompt_is_refused(specs, tmp_path):
    chosen = [s for s in specs if s.startswith("ai2d:")]
    evaluate(chosen, oracle(), k=1, out_dir=tmp_path, progress=False)
    from vlm_opd.eval import get_benchmark

    bench = get_benchmark(chosen[0], prompt_suffix="Think step by step.")
    with pytest.raises(DataError, match=r"AI2D: item '0' changed since it was cached"):
        evaluate([bench], oracle(), k=1, out_dir=tmp_path, progress=False)


def test_bad_arguments_and_outputs(specs, tmp_path):
    chosen = [s for s in specs if s.startswith("ai2d:")]
    with pytest.raises(ConfigError, match="k must be"):
        evaluate(chosen, oracle(), k=0, out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="listed twice"):
        evaluate(chosen + chosen, oracle(), k=1, out_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="unknown benchmark 'mathvist'"):
        evaluate(["mathvist"], oracle(), k=1, out_dir=tmp_path, progress=False)
    with pytest.raises(ModelError, match=r"generate_fn returned 1 results for a batch of 3"):
        evaluate(chosen, lambda ex, k, t, g, s: [["x"]], k=1, batch_size=8, out_dir=tmp_path / "a", progress=False)
    with pytest.raises(ModelError, match=r"must return 2 strings for item '0'"):
        evaluate(chosen, lambda ex, k, t, g, s: [["x"]] * len(ex), k=2, out_dir=tmp_path / "b", progress=False)


def test_limit_and_greedy_only(specs, tmp_path):
    res = evaluate([s for s in specs if s.startswith("mmmu:")], oracle(), k=0, greedy_pass1=True, limit=2,
                   out_dir=tmp_path, progress=False)
    assert res["modes"] == ["greedy"]
    assert res["benchmarks"]["mmmu"]["n_items"] == 2
    assert res["benchmarks"]["mmmu"]["results"]["greedy"]["score"] == pytest.approx(50.0)


def test_progress_bar_runs(specs, tmp_path):
    res = evaluate([s for s in specs if s.startswith("ai2d:")], oracle(), k=1, out_dir=tmp_path, progress=True)
    assert res["benchmarks"]["ai2d"]["results"]["avg@1"]["n_completions"] == 3
