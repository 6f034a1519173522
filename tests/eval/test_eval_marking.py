"""Numbers scored by an offline stand-in rule, the lenient parser or an outside extractor are marked as
not comparable with the papers (results.json flags, table markers, footnotes); the lenient parser is
opt-in only and tags what it scores."""

from __future__ import annotations

import json

import pytest

from vlm_opd.eval import evaluate
from vlm_opd.eval.benchmarks import get_benchmark
from vlm_opd.eval.benchmarks.base import score_lenient_choice
from vlm_opd.eval.fixtures import oracle_generate_fn, write_all_fixtures
from vlm_opd.eval.report import MARKERS, comparability, render_markdown, rule_kind
from vlm_opd.eval.scoring import LENIENT, OFFICIAL, OFFLINE, ItemScore

DAGGER, DDAGGER, SECTION = MARKERS[OFFLINE][0], MARKERS[LENIENT][0], MARKERS["extractor"][0]


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    return write_all_fixtures(tmp_path_factory.mktemp("fixtures"))


def _spec(specs, name):
    return next(s for s in specs if s.startswith(f"{name}:"))


def test_comparability_of_rule_counts():
    assert comparability({OFFICIAL: 4}, "Visual") == {"comparable_with_papers": True, "not_comparable_rules": {}}
    assert comparability({OFFICIAL: 2, "judge:gpt-4o": 2}, "Math")["comparable_with_papers"] is True
    mixed = comparability({"judge:gpt-4o": 3, OFFLINE: 1}, "Math")
    assert mixed == {"comparable_with_papers": False, "not_comparable_rules": {OFFLINE: 1}}
    assert comparability({"extractor:mine": 2}, "VOLD")["comparable_with_papers"] is False
    assert comparability({LENIENT: 1, OFFICIAL: 1}, "Visual")["not_comparable_rules"] == {LENIENT: 1}
    assert comparability({"something-new": 1}, "Visual")["comparable_with_papers"] is False  # unknown: not trusted
    assert comparability({OFFICIAL: 3}, "Local")["comparable_with_papers"] is None  # no paper number
    assert [rule_kind(r) for r in (OFFICIAL, "judge:m", OFFLINE, LENIENT, "extractor:x", "?")] == [
        "official", "judge", "offline-rule", "lenient", "extractor", "other"]


def test_offline_rule_results_are_flagged_and_marked(specs, tmp_path):
    """Without a judge, MathVerse and MathVista (official protocols with an LLM step) cannot be comparable;
    every flag equals what the per-item rules say, group averages inherit the flag, the report marks them."""
    res = evaluate(specs, oracle_generate_fn(), k=2, greedy_pass1=True, batch_size=4, out_dir=tmp_path,
                   progress=False)
    assert res["settings"]["lenient"] is False
    for key, entry in res["benchmarks"].items():
        for mode, r in entry["results"].items():
            rules = [rule for item in entry["items"] for rule in item["modes"][mode]["rule"]]
            bad = sorted({x for x in rules if not (x == OFFICIAL or x.startswith("judge:"))})
            assert sorted(r["not_comparable_rules"]) == bad, (key, mode)
            assert sum(r["not_comparable_rules"].values()) == sum(x in bad for x in rules)
            want = None if entry["group"] == "Local" else not bad
            assert r["comparable_with_papers"] is want, (key, mode)
            assert LENIENT not in rules  # the lenient parser never runs unless asked for
    for key in ("mathverse", "mathvista"):
        assert res["benchmarks"][key]["results"]["avg@2"]["comparable_with_papers"] is False
        assert OFFLINE in res["benchmarks"][key]["results"]["avg@2"]["not_comparable_rules"]
    summary = res["summary"]["avg@2"]
    assert {"mathverse", "mathvista"} <= set(summary["not_comparable"])
    assert summary["groups"]["Math"]["comparable_with_papers"] is False
    assert summary["groups"]["Local"]["comparable_with_papers"] is None
    visual = summary["groups"]["Visual"]
    assert visual["comparable_with_papers"] is all(summary["comparable_with_papers"][k] for k in visual["benchmarks"])

    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    row = next(line for line in report.splitlines() if line.startswith("| avg@2"))
    header = next(line for line in report.splitlines() if line.startswith("| Mode"))
    cells = dict(zip([c.strip() for c in header.split("|")[1:-1]], [c.strip() for c in row.split("|")[1:-1]]))
    assert cells["MathVerse"].endswith(DAGGER) and cells["MathVista"].endswith(DAGGER)
    assert cells["Math Avg"].endswith(DAGGER)
    assert f"{DAGGER} NOT comparable with the papers' numbers: scored (in part) by offline-rule" in report
    assert "| MathVerse | avg@2 |" in report and "| **no** " + DAGGER in report
    on_disk = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert on_disk["benchmarks"]["mathverse"]["results"]["greedy"]["comparable_with_papers"] is False


def test_lenient_is_opt_in_tagged_and_marked(specs, tmp_path):
    """--lenient scores every multiple-choice item with the lenient parser (rule "lenient"), leaves
    other items to the official rule, and the numbers are flagged and marked as not comparable."""
    chosen = [_spec(specs, n) for n in ("mmstar", "ai2d", "ocrbench", "mathvista")]
    res = evaluate(chosen, oracle_generate_fn(), k=1, batch_size=4, out_dir=tmp_path, progress=False, lenient=True)
    assert res["settings"]["lenient"] is True
    for key in ("mmstar", "ai2d"):
        r = res["benchmarks"][key]["results"]["avg@1"]
        assert r["rules"] == {LENIENT: res["benchmarks"][key]["n_items"]}
        assert r["comparable_with_papers"] is False and r["score"] == pytest.approx(100.0)
    assert LENIENT not in res["benchmarks"]["ocrbench"]["results"]["avg@1"]["rules"]  # not multiple choice
    qtype = {ex.id: ex.meta["question_type"] for ex in get_benchmark(_spec(specs, "mathvista")).load()}
    assert set(qtype.values()) == {"multi_choice", "free_form"}
    for item in res["benchmarks"]["mathvista"]["items"]:  # MathVista mixes both kinds
        rules = item["modes"]["avg@1"]["rule"]
        assert (rules == [LENIENT]) is (qtype[item["id"]] == "multi_choice"), (item["id"], rules)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "LENIENT multiple-choice parser (--lenient)" in report
    assert f"{DDAGGER} NOT comparable with the papers' numbers: scored (in part) by lenient" in report
    # the same completions rescored without --lenient: official rules again, from the cache
    gen = oracle_generate_fn()
    again = evaluate(chosen, gen, k=1, batch_size=4, out_dir=tmp_path, progress=False)
    assert gen.calls == [] and LENIENT not in again["benchmarks"]["mmstar"]["results"]["avg@1"]["rules"]


@pytest.mark.parametrize("text,options,gold,score,extracted", [
    ("answer: b", ["dog", "cat"], "B", 1.0, "B"),  # lowercase letter after "answer:"
    ("**B**", ["dog", "cat"], "B", 1.0, "B"),  # markdown stripped
    ("The answer is cat.", ["dog", "cat"], "cat", 1.0, "B"),  # option text; gold given as text
    ("I pick B) because", {"A": "dog", "B": "cat"}, "A", 0.0, "B"),
    ("no idea", ["dog", "cat"], "A", 0.0, None),
])
def test_score_lenient_choice(text, options, gold, score, extracted):
    s = score_lenient_choice(text, options, gold)
    assert s == ItemScore(score, extracted, extracted is not None, LENIENT)


def test_score_item_dispatch(specs):
    bench = get_benchmark(_spec(specs, "mmstar"))
    ex = bench.load()[0]
    text = f"answer: {ex.answer.lower()}"
    assert bench.score_item(text, ex) == bench.score(text, ex)  # default: the official scorer
    bench.lenient = True
    assert bench.score_item(text, ex).rule == LENIENT
    ocr = get_benchmark(_spec(specs, "ocrbench"))
    ocr.lenient = True
    item = ocr.load()[0]
    assert ocr.score_item("x", item) == ocr.score("x", item)


def test_render_marks_extractor_numbers():
    results = {
        "settings": {"k": 1, "temperature": 1.0, "greedy_pass1": False, "limit": None, "judge": None,
                     "lenient": False},
        "modes": ["avg@1"],
        "benchmarks": {
            "logicvista": {"title": "LogicVista", "group": "VOLD", "n_items": 1, "results": {"avg@1": {
                "metrics": {"accuracy": 50.0}, "counts": {}, "headline": "accuracy", "score": 50.0,
                "n_unparsed": 0, "n_completions": 2, "rules": {"extractor:mine": 2},
                **comparability({"extractor:mine": 2}, "VOLD")}}},
        },
    }
    text = render_markdown(results)
    assert f"| avg@1 | 50.0{SECTION} | 50.0{SECTION} |" in text
    assert f"{SECTION} NOT comparable" in text
