"""Shared by the reliability suites: tiny fast training configs (`rh` fixture) and a one-line CLI check."""

from __future__ import annotations

import hashlib
import types
from pathlib import Path

import pytest
import yaml

from vlm_opd.cli import main


def tiny_cfg(out_dir, student, teacher=None, **extra) -> dict:
    """A 2-step sft (or distillation, given a teacher) run on the synthetic task: a few seconds on CPU."""
    cfg = {"method": "sft" if teacher is None else "opd", "output_dir": str(out_dir),
           "student": {"path": str(student)}, "data": {"train": "synthetic:6"}, "prompts_per_step": 2,
           "steps": 2, "sft": {"max_length": 24}, "rollout": {"k": 2, "max_new_tokens": 6},
           "optim": {"lr": 1e-2, "schedule": "constant"}}
    if teacher is not None:
        cfg["teacher"] = {"path": str(teacher)}
    cfg.update(extra)
    return cfg


def write_cfg(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def tree_digest(root: Path) -> dict[str, str]:
    """sha1 of every file under `root` (to prove nothing was touched)."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".vlm-opd.lock")}


@pytest.fixture(scope="session")
def rh():
    """The helpers above, for test modules (tests are imported with importlib: no shared module)."""
    return types.SimpleNamespace(tiny_cfg=tiny_cfg, write_cfg=write_cfg, tree_digest=tree_digest)


@pytest.fixture
def cli_error(capsys):
    """Run the CLI, expect exit 2 with exactly one stderr line starting `vlm-opd <cmd>: error:`; return it."""

    def run(*argv: str) -> str:
        capsys.readouterr()
        code = main(list(argv))
        err = capsys.readouterr().err.strip()
        assert code == 2, err[-2000:]
        lines = [l for l in err.splitlines() if l.startswith("vlm-opd ")]
        assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
        return lines[0]

    return run
