import dataclasses

import pytest

from vlm_opd.config import (
    TrainConfig,
    apply_overrides,
    config_from_dict,
    describe_config,
    load_config,
    stage_configs,
)
from vlm_opd.errors import ConfigError

BASE = {"method": "va_opd", "student": {"path": "s"}, "teacher": {"path": "t"}, "data": {"train": "d"}}


def test_paper_defaults():
    cfg = config_from_dict(BASE)
    assert (cfg.rollout.k, cfg.va_opd.tau, cfg.va_opd.lam, cfg.va_opd.top_frac, cfg.va_opd.pixelate_ratio) == (
        4, 1.0, 0.5, 0.2, 0.10)
    assert cfg.loss.divergence == "reverse_kl"


def test_every_key_has_help():
    rows = describe_config()
    missing = [key for key, _, help_text in rows if not help_text.strip()]
    assert not missing, missing
    assert any(key == "va_opd.top_frac" for key, _, _ in rows)


def test_overrides_types_and_yaml_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: opd\nstudent: {path: s}\nteacher: {path: t}\ndata: {train: d}\noptim: {lr: 1e-5}\n")
    cfg = load_config(path, ["rollout.k=8", "va_opd.reweight=false", "optim.betas=[0.9, 0.98]"])
    assert cfg.optim.lr == 1e-5 and cfg.rollout.k == 8 and cfg.va_opd.reweight is False
    assert cfg.optim.betas == [0.9, 0.98]


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("methd=opd", "did you mean method"),
        ("va_opd.top_frc=0.3", "did you mean va_opd.top_frac"),
        ("method=va-opd", "did you mean 'va_opd'"),
        ("va_opd.top_frac=1.0", "va_opd.top_frac"),
        ("va_opd.lam=1.5", "va_opd.lam"),
        ("va_opd.tau=0", "va_opd.tau"),
        ("rollout.k=two", "rollout.k: expected an integer"),
        ("va_opd.grouped=maybe", "expected true/false"),
        ("grad_accum=3", "divisible"),
        ("optim.lr=nan", "finite"),
        ("nokey", "expected key=value"),
    ],
)
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        config_from_dict(apply_overrides(BASE, [override]))


def test_ppo_mini_batches_must_split_every_micro_batch():
    grpo = apply_overrides(BASE, ["method=grpo", "prompts_per_step=8", "grad_accum=2"])
    assert config_from_dict(apply_overrides(grpo, ["grpo.mini_batches=4"])).grpo.mini_batches == 4
    with pytest.raises(ConfigError, match=r"grpo.mini_batches.*\(2 x 3\)"):
        config_from_dict(apply_overrides(grpo, ["grpo.mini_batches=3"]))
    with pytest.raises(ConfigError, match="grpo.ppo_epochs"):
        config_from_dict(apply_overrides(grpo, ["grpo.ppo_epochs=0"]))


def test_missing_required():
    with pytest.raises(ConfigError, match="teacher.path"):
        config_from_dict({"method": "opd", "student": {"path": "s"}, "data": {"train": "d"}})
    config_from_dict({"method": "grpo", "student": {"path": "s"}, "data": {"train": "d"}})  # no teacher needed


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)


def test_stages_chain_student_paths(tmp_path):
    cfg = config_from_dict({
        "output_dir": str(tmp_path),
        "student": {"path": "s"}, "teacher": {"path": "t"}, "data": {"train": "d"},
        "stages": [{"method": "sft"}, {"method": "vold", "vold": {"distill_on": "failed"}}],
    })
    s0, s1 = stage_configs(cfg)
    assert s0.method == "sft" and s1.method == "vold"
    assert s1.student.path == str(tmp_path / "stage0-sft" / "final")
    assert s1.vold.distill_on == "failed" and s0.output_dir != s1.output_dir


def test_roundtrip_dict():
    cfg = config_from_dict(BASE)
    again = config_from_dict(dataclasses.asdict(cfg))
    assert again == cfg
    assert isinstance(again, TrainConfig)


def _repo_configs():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    return sorted(p for p in root.rglob("*.yaml") if "accelerate" not in p.parts)


@pytest.mark.parametrize("path", _repo_configs(), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    for stage in stage_configs(cfg):
        assert stage.method in ("sft", "kd", "opd", "va_opd", "grpo", "papo", "vold")
        assert stage.student.path and stage.data.train


def test_shipped_paper_defaults():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs/paper/geo3k-va_opd.yaml")
    assert (cfg.method, cfg.rollout.k, cfg.prompts_per_step, cfg.epochs) == ("va_opd", 4, 16, 5)
    assert (cfg.va_opd.tau, cfg.va_opd.lam, cfg.va_opd.top_frac, cfg.va_opd.pixelate_ratio) == (1.0, 0.5, 0.2, 0.1)
    top = load_config(Path(__file__).resolve().parents[1] / "configs/paper/geo3k-opd-mask-top.yaml")
    assert (top.method, top.token_mask.which, top.token_mask.frac) == ("opd", "top", 0.1)


def test_base_chain(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_config_reference_doc_is_up_to_date():
    from pathlib import Path

    from vlm_opd.commands.docs import config_markdown

    doc = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert doc.read_text() == config_markdown(), "docs/config.md is stale: run `vlm-opd config-docs > docs/config.md`"
