"""Each benchmark loader reads its fixture (official schema), prompts follow the protocol, errors name the culprit."""

import json

import pytest
from PIL import Image

from vlm_opd.data.example import IMAGE_PLACEHOLDER
from vlm_opd.errors import ConfigError, DataError
from vlm_opd.eval import BENCHMARKS, get_benchmark
from vlm_opd.eval.fixtures import write_fixture
from vlm_opd.eval.scoring import OFFICIAL, OFFLINE

ALL = list(BENCHMARKS)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixtures")
    return {name: write_fixture(name, root) for name in ALL}


@pytest.fixture(scope="module")
def loaded(fixture_dir):
    out = {}
    for name, path in fixture_dir.items():
        bench = get_benchmark(f"{name}:{path}")
        out[name] = (bench, bench.load())
    return out


@pytest.mark.parametrize("name", ALL)
def test_loader_reads_fixture(loaded, name):
    bench, examples = loaded[name]
    assert 3 <= len(examples) <= 6
    assert len({ex.id for ex in examples}) == len(examples)
    for ex in examples:
        assert ex.problem.strip() and ex.answer not in (None, "")
        assert ex.meta["benchmark"] == name
        assert all(isinstance(im, Image.Image) and im.mode == "RGB" for im in ex.images)
        n_markers = ex.problem.count(IMAGE_PLACEHOLDER)
        assert n_markers in (0, len(ex.images))
        if not (name == "hallusionbench" and ex.meta["visual_input"] == "0"):
            assert ex.images, f"{name} {ex.id} has no image"


@pytest.mark.parametrize("name", ALL)
def test_reference_and_wrong_completions_roundtrip(loaded, name):
    """Every scorer accepts its benchmark's reference answer and rejects a wrong one, for every fixture row."""
    bench, examples = loaded[name]
    for ex in examples:
        right = bench.score(bench.reference_completion(ex), ex)
        wrong = bench.score(bench.wrong_completion(ex), ex)
        expected_rule = OFFLINE if bench.uses_judge else OFFICIAL
        assert (right.score, right.parsed, right.rule) == (1.0, True, expected_rule), (ex.id, right)
        assert wrong.score == 0.0, (ex.id, wrong)


def test_protocol_prompts(loaded):
    _, mathvista = loaded["mathvista"]
    by_id = {ex.id: ex for ex in mathvista}
    assert by_id["1"].problem.startswith("Hint: Please answer the question and provide the correct option letter")
    assert "(C) 60°" in by_id["1"].problem
    assert by_id["4"].problem.startswith("Hint: Please answer the question requiring a Python list")  # built query

    _, mmmu = loaded["mmmu"]
    two = next(ex for ex in mmmu if ex.id == "validation_Art_2")
    assert two.problem.count(IMAGE_PLACEHOLDER) == 2 and len(two.images) == 2
    assert two.images[0].getpixel((0, 0)) != two.images[1].getpixel((0, 0))  # image_1 then image_2
    assert "(A) The first\n(B) The second" in two.problem
    assert two.problem.endswith("Answer with the option's letter from the given choices directly.")
    open_q = next(ex for ex in mmmu if ex.id == "validation_Physics_3")
    assert open_q.problem.endswith("Answer the question using a single word or phrase.")

    _, pro = loaded["mmmu_pro"]
    assert "\nJ. option J\n" in pro[0].problem and "'Answer: $LETTER'" in pro[0].problem

    _, ai2d = loaded["ai2d"]
    assert ai2d[1].answer == "A" and "A. rabbit\nB. hawk" in ai2d[1].problem  # index "0" -> letter A

    _, mathverse = loaded["mathverse"]
    assert mathverse[0].problem.startswith("Please first conduct reasoning")  # query_cot by default
    assert mathverse[0].meta["options"] == {"A": "30°", "B": "45°", "C": "60°", "D": "90°"}
    direct = get_benchmark(f"mathverse:{mathverse_path(loaded)}", prompt_field="query_wo").load()
    assert direct[0].problem.startswith("Please directly answer")

    _, mmstar = loaded["mmstar"]
    assert mmstar[0].meta["options"] == {"A": "a cup", "B": "a cat", "C": "a book", "D": "a lamp"}

    _, wemath = loaded["wemath"]
    assert wemath[0].id == "1@2steps_1" and wemath[0].meta["options"]["E"] == "No correct answer"

    _, mathvision = loaded["mathvision"]
    assert mathvision[0].problem.count(IMAGE_PLACEHOLDER) == 1 and "<image1>" not in mathvision[0].problem
    assert "(C) 5" in mathvision[2].problem and "(A) A" not in mathvision[1].problem  # letters-only options not listed

    _, logic = loaded["logicvista"]
    assert {ex.id: ex.meta["gold_set"] for ex in logic}["v1_1"] == ["A", "C"]

    _, hb = loaded["hallusionbench"]
    assert [ex.answer for ex in hb][:4] == ["yes", "no", "no", "yes"]
    assert hb[4].images == [] and hb[4].id == "VS_chart_1_0_0"


def mathverse_path(loaded):
    return loaded["mathverse"][0].source


def test_prompt_suffix_and_limit(fixture_dir):
    bench = get_benchmark(f"ai2d:{fixture_dir['ai2d']}", prompt_suffix="Put the letter in \\boxed{}.")
    examples = bench.load(limit=2)
    assert len(examples) == 2 and examples[0].problem.endswith("\nPut the letter in \\boxed{}.")


def test_logicvista_scoring_sets():
    bench = get_benchmark("logicvista:unused")
    from vlm_opd.data.example import Example

    ex = Example(problem="q", answer="A, C", meta={"gold_set": ["A", "C"]})
    assert bench.score("Both fit, so Answer: C, A", ex).score == 1.0
    assert bench.score("Answer: A", ex).score == 0.0  # a subset is not the answer
    assert not bench.score("I cannot tell.", ex).parsed  # the pronoun is not option I
    assert bench.score("C, A", ex).score == 1.0  # a bare short reply


# ------------------------------------------------------------------ bad input


def test_unknown_benchmark_name_suggests():
    with pytest.raises(ConfigError) as err:
        get_benchmark("HalusionBench")
    msg = str(err.value)
    assert "hallusionbench" in msg and "Did you mean 'hallusionbench'" in msg and "mathvista" in msg
    with pytest.raises(ConfigError, match="empty path"):
        get_benchmark("mmmu:")
    with pytest.raises(ConfigError, match="needs a path"):
        get_benchmark("local")
    assert get_benchmark("MathVista").name == "mathvista" and get_benchmark("mmmu-pro").name == "mmmu_pro"


def test_missing_source_and_offline_hub(tmp_path):
    with pytest.raises(DataError, match=r"MMStar: source .*nowhere does not exist"):
        get_benchmark(f"mmstar:{tmp_path / 'nowhere'}").load()
    with pytest.raises(DataError, match=r"MathVista: could not load 'AI4Math/MathVista'.*mathvista:/path"):
        get_benchmark("mathvista").load()  # tests run with the hub offline


def _rewrite_json(path, edit):
    rows = json.loads(path.read_text())
    edit(rows)
    path.write_text(json.dumps(rows))


def test_row_without_image_names_benchmark_and_row(tmp_path):
    d = write_fixture("wemath", tmp_path)
    _rewrite_json(d / "testmini.json", lambda rows: rows[2].update(image_path=""))
    with pytest.raises(DataError) as err:
        get_benchmark(f"wemath:{d}").load()
    assert "WeMath row 2" in str(err.value) and "no image" in str(err.value)

    d = write_fixture("hallusionbench", tmp_path / "hb")
    _rewrite_json(d / "HallusionBench.json", lambda rows: rows[1].update(filename="./missing.png"))
    with pytest.raises(DataError, match=r"HallusionBench row 1 \(VD_figure_0_0_1\).*missing.png.*not found"):
        get_benchmark(f"hallusionbench:{d}").load()


def test_row_without_answer_names_benchmark_and_row(tmp_path):
    d = write_fixture("mathvista", tmp_path)
    _rewrite_json(d / "testmini.json", lambda rows: rows["3"].pop("answer"))
    with pytest.raises(DataError, match=r"MathVista row 2 \(pid '3'\): missing required field 'answer'"):
        get_benchmark(f"mathvista:{d}").load()

    d = write_fixture("logicvista", tmp_path / "lv")
    _rewrite_json(d / "dataset.json", lambda rows: rows["v1_2"].update(answer=""))
    with pytest.raises(DataError, match=r"LogicVista row 2 \(id 'v1_2'\): missing required field 'answer'"):
        get_benchmark(f"logicvista:{d}").load()


def test_bad_values_are_refused(tmp_path):
    d = write_fixture("mathvista", tmp_path)
    _rewrite_json(d / "testmini.json", lambda rows: rows["1"].update(answer="75°"))
    with pytest.raises(DataError, match=r"MathVista row 0 \(pid '1'\): answer '75°' is not one of the choices"):
        get_benchmark(f"mathvista:{d}").load()

    d = write_fixture("hallusionbench", tmp_path / "hb")
    _rewrite_json(d / "HallusionBench.json", lambda rows: rows[0].update(gt_answer="maybe"))
    with pytest.raises(DataError, match="gt_answer must be '1'"):
        get_benchmark(f"hallusionbench:{d}").load()

    d = write_fixture("ocrbench", tmp_path / "ocr")
    _rewrite_json(d / "OCRBench.json", lambda rows: rows[1].update(id=0))
    with pytest.raises(DataError, match="OCRBench: rows 0 and 1 share the id '0'"):
        get_benchmark(f"ocrbench:{d}").load()


def test_mmmu_marker_without_image(tmp_path):
    import pyarrow.parquet as pq

    path = write_fixture("mmmu", tmp_path)
    rows = pq.read_table(path).to_pylist()
    rows[1]["image_2"] = None
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError, match=r"MMMU row 1 \(id 'validation_Art_2'\): the prompt refers to <image 2>"):
        get_benchmark(f"mmmu:{path}").load()


def test_directory_with_several_splits(tmp_path):
    d = write_fixture("ai2d", tmp_path).parent
    (d / "train-00000-of-00001.parquet").write_bytes((d / "test-00000-of-00001.parquet").read_bytes())
    assert len(get_benchmark(f"ai2d:{d}").load()) == 3  # picks the test shard
    (d / "test-00000-of-00001.parquet").rename(d / "other.parquet")
    with pytest.raises(DataError, match="several data files"):
        get_benchmark(f"ai2d:{d}").load()


def test_local_requires_images(tmp_path):
    path = write_fixture("local", tmp_path)
    lines = path.read_text().splitlines()
    row = json.loads(lines[1])
    row["images"] = []
    lines[1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"local:eval.jsonl row 1 \(id 'loc-1'\): no images"):
        get_benchmark(f"local:{path}").load()
