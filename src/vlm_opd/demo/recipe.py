"""The demo's recipe: task, model sizes, step counts, and the `vlm-opd train` configs built from them.

Everything the demo trains is an ordinary `vlm-opd train` run; `method_configs` returns their config
mappings (the files under configs/demo/ are these mappings with default paths, see `write_configs`).
`FULL` is the real demo (about 10 minutes on 2 CPU cores, teacher training included); `QUICK` runs
the same pipeline with tiny step counts in about a minute, for tests (its numbers mean nothing).

Why the numbers are what they are (measured on this project's 2-core CPU):
- Task: the synthetic bar chart with TWO single-digit values (1-9) printed at fixed slots, question
  "sum of the values". The reading tokens ("The bars show 7 and 4.") need the image; the rest of the
  chain ("7 + 4 = 11. The answer is \\boxed{11}.") follows from them. Held-out = new images
  (`holdout: images`): a 2-layer model memorises the 81 single-digit sums and does not generalise them
  to unseen pairs (17% on held-out pairs in a text-only check), which would hide the visual question.
- From scratch, a tiny Qwen2-VL sits on a blind plateau (reads nothing, digit NLL = ln 9) for a few
  hundred steps of batch 64, then learns to read within ~150 steps; the teacher gets enough steps to
  be past that with margin.
- The student's cold start is the same SFT, stopped at the first check (greedy, every 10 steps)
  where it reads 30% of the held-out images: it has learned the format and the arithmetic and is
  half-way through learning to read, so it is aligned but clearly weaker, and its rollouts put
  non-zero probability on the right digits (reverse KL cannot pull probability up from ~0: a student
  cold-started on values 1-5 only never learned 6-9 under OPD in 150 steps).
- Initialisation: weights re-drawn with std 1/sqrt(fan_in) (see `pipeline.build_model`); with the
  Hugging Face default (std 0.02) the blind plateau lasted 400-900+ steps, with it ~200.
- Measured with this recipe (seed 0, 2 cores, fresh cache): teacher 100% greedy on 128 held-out
  images after 600 steps (~130 s), cold start stopped at step 470 (39% greedy, 23% avg@4 at T=1),
  OPD 98.2% and VA-OPD 98.8% after 300 steps (~2.5 min side by side), whole demo ~5 min.
- Tried to show VA-OPD's gain by adding the paper's dilution (task.filler_sentences=3, max_new_tokens 60,
  optionally student_task={"filler_skew": 2.0}): OPD beat VA-OPD in all five runs by 4-7 points (see
  the README's demo section for the numbers and the two measured reasons), so FULL keeps the plain task.
- The study over 3 seeds (`SETTINGS`, `VA_OPD_VARIANTS`, docs/va_opd_study.md): no setting and method
  separated from OPD (paired 95% intervals all include 0), so FULL stays as it is.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_opd.io_utils import atomic_write_text


@dataclass(frozen=True)
class ModelSize:
    """Arguments of `vlm_opd.models.build_tiny` that set the size of a tiny Qwen2-VL."""

    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_intermediate: int
    vision_depth: int
    vision_embed: int
    vision_heads: int


@dataclass(frozen=True)
class DemoRecipe:
    """Every knob of the demo. Teacher-relevant fields feed `teacher_key` (the cache key)."""

    name: str
    # Task (knobs of vlm_opd.data.synthetic; the student's cold start narrows value_range).
    task: dict[str, Any] = field(default_factory=lambda: {
        "tasks": ["bar-sum"], "num_values": 2, "value_range": [1, 9], "image_size": 56, "holdout": "images",
    })
    # Overrides of `task` for the student's cold start only (e.g. its own phrasing habit); the teacher,
    # the tokenizer, distillation and evaluation use `task`. Not part of `teacher_key`.
    student_task: dict[str, Any] = field(default_factory=dict)
    n_train: int = 20_000  # training pool (fresh styles; the trainer walks seeded permutations of it)
    n_eval: int = 128  # held-out prompts for periodic evaluation
    # Models: one tokenizer (vocab_size, tokenizer_seed) shared by teacher and student.
    family: str = "qwen2_vl"
    vocab_size: int = 512
    tokenizer_seed: int = 0
    max_image_tokens: int = 4
    teacher_size: ModelSize = ModelSize(64, 2, 4, 2, 256, 2, 64, 2)
    student_size: ModelSize = ModelSize(48, 2, 4, 2, 192, 2, 48, 2)
    teacher_seed: int = 0  # data order of the teacher's SFT (the teacher does not depend on --seed)
    # Supervised phases (teacher from scratch, student cold start).
    sft_lr: float = 2e-3
    sft_batch: int = 64
    sft_warmup: int = 50
    teacher_sft_steps: int = 600
    teacher_target_accuracy: float = 0.9
    # The cold start stops at the first check (every `student_check_every` steps, greedy on
    # `student_check_prompts` held-out images) where the student reads `student_stop_accuracy` of them.
    student_max_steps: int = 900
    student_check_every: int = 10
    student_check_prompts: int = 64
    student_stop_accuracy: float = 0.3
    # Distillation phase (OPD, VA-OPD, GRPO share everything but the method).
    distill_steps: int = 300
    prompts_per_step: int = 16
    rollout_k: int = 4
    distill_lr: float = 1e-3
    distill_warmup: int = 10
    distill_schedule: str = "cosine"  # to 10%: constant lr left both methods oscillating by +-5 points at the end
    max_new_tokens: int = 40
    eval_every: int = 25
    eval_k: int = 4
    # Analysis pass (VA histogram and heatmap): held-out prompts x samples at T = 1.0.
    analysis_prompts: int = 64
    analysis_k: int = 4

    def teacher_key(self) -> str:
        """Hash of everything that determines the teacher (the cache directory's suffix)."""
        parts = {
            "task": self.task, "n_train": self.n_train, "n_eval": self.n_eval, "family": self.family,
            "vocab_size": self.vocab_size, "tokenizer_seed": self.tokenizer_seed,
            "max_image_tokens": self.max_image_tokens, "size": dataclasses.asdict(self.teacher_size),
            "seed": self.teacher_seed, "lr": self.sft_lr, "batch": self.sft_batch, "warmup": self.sft_warmup,
            "steps": self.teacher_sft_steps, "format": 1,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]

    def build_kwargs(self, role: str) -> dict[str, Any]:
        """`build_tiny` keyword arguments for the teacher or the student (same tokenizer for both)."""
        from vlm_opd.data.synthetic import corpus_texts

        size = self.teacher_size if role == "teacher" else self.student_size
        return {
            "vocab_size": self.vocab_size, "max_image_tokens": self.max_image_tokens, "seed": self.tokenizer_seed,
            "corpus": corpus_texts(500, self.tokenizer_seed, **self.task), **dataclasses.asdict(size),
        }


FULL = DemoRecipe(name="full")

# Same pipeline, tiny everything: checks the plumbing end to end in about a minute (numbers meaningless).
QUICK = dataclasses.replace(
    FULL, name="quick", n_train=256, n_eval=8,
    teacher_size=ModelSize(32, 1, 2, 1, 64, 1, 32, 2), student_size=ModelSize(16, 1, 2, 1, 32, 1, 16, 2),
    teacher_sft_steps=6, student_max_steps=4, student_check_every=2, student_check_prompts=4,
    student_stop_accuracy=1.0, sft_batch=8, sft_warmup=1,
    distill_steps=4, prompts_per_step=2, rollout_k=2, distill_warmup=1, max_new_tokens=32, eval_every=2, eval_k=2,
    analysis_prompts=4, analysis_k=2,
)

METHOD_LABELS = {"opd": "Standard OPD", "va_opd": "VA-OPD", "grpo": "GRPO"}
# The paper's VA-OPD hyperparameters (tau, lambda, p_v), used for training and for the analysis.
VA_OPD_PARAMS = {"tau": 1.0, "lam": 0.5, "top_frac": 0.2}

# VA-OPD variants `vlm-opd demo --methods` can run beside the paper's: each is method `va_opd` with
# these `va_opd.*` overrides on top of the paper's parameters (see the README's "VA variants").
# `va_opd_shift` combines the three measured fixes: position-level VA (a misread digit keeps its score),
# a high group of positive VA only, and a floor that drops the tiny VA of filler/scaffold tokens.
VA_OPD_VARIANTS: dict[str, dict[str, Any]] = {
    "va_opd_shift": {"va_kind": "teacher_shift", "high_group": "positive", "va_floor": 0.01},
    "va_opd_positive": {"high_group": "positive", "va_floor": 0.01},
}
METHOD_LABELS.update({
    "va_opd_shift": "VA-OPD shift+pos+floor",
    "va_opd_positive": "VA-OPD pos+floor",
})
DISTILL_METHODS = ("opd", "va_opd", *VA_OPD_VARIANTS)

# Task settings of `vlm-opd demo --setting` (overrides of the recipe; "default" is the recipe itself).
# - dilution: the paper's dilution built in on purpose: 3 image-independent "checking" sentences
#   between the arithmetic and the answer (room for them: 60 new tokens).
# - shortcut: a language shortcut: the question states a hint that equals the answer with probability
#   0.6 on the training split; evaluation reports the held-out split (hint uninformative, the
#   training evals) and the main split (hint as in training, `shortcut_eval` = 0.6).
SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "dilution": {"task": {"filler_sentences": 3}, "max_new_tokens": 60},
    "shortcut": {"task": {"shortcut": 0.6}},
}


def setting_recipe(recipe: DemoRecipe, setting: str) -> DemoRecipe:
    """`recipe` with the overrides of `setting` (one of SETTINGS); "default" returns `recipe` itself."""
    if setting not in SETTINGS:
        from vlm_opd.errors import ConfigError

        raise ConfigError(f"--setting: expected one of {', '.join(SETTINGS)}, got {setting!r}")
    if setting == "default":
        return recipe
    over = dict(SETTINGS[setting])
    task = {**recipe.task, **over.pop("task", {})}
    return dataclasses.replace(recipe, name=f"{recipe.name}-{setting}", task=task, **over)


def parse_methods(text: str) -> list[str]:
    """"opd,va_opd,va_opd_shift" -> the distillation methods to run; OPD is required (the baseline every
    paired difference is taken against) and comes first."""
    from vlm_opd.errors import ConfigError

    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in DISTILL_METHODS]
    if unknown or not names or len(set(names)) != len(names) or "opd" not in names:
        raise ConfigError(f"--methods: expected distinct names from {', '.join(DISTILL_METHODS)} including opd "
                          f"(comma-separated), got {text!r}")
    return ["opd"] + [m for m in names if m != "opd"]


def method_va_params(config: dict[str, Any]) -> dict[str, Any] | None:
    """The loss spec of a distillation run config, for the analysis of where its objective puts weight:
    {reweight, grouped, tau, lam, top_frac, va_kind, va_floor, high_group, shift_divergence}; None for
    methods without a per-token KL objective (GRPO)."""
    if config["method"] == "opd":
        return {**VA_OPD_PARAMS, "reweight": False, "grouped": False, "va_kind": "sampled", "va_floor": 0.0,
                "high_group": "fixed", "shift_divergence": "kl_real_degraded"}
    if config["method"] != "va_opd":
        return None
    va = config.get("va_opd", {})
    return {"tau": va.get("tau", 1.0), "lam": va.get("lam", 0.5), "top_frac": va.get("top_frac", 0.2),
            "reweight": va.get("reweight", True), "grouped": va.get("grouped", True),
            "va_kind": va.get("va_kind", "sampled"), "va_floor": va.get("va_floor", 0.0),
            "high_group": va.get("high_group", "fixed"),
            "shift_divergence": va.get("shift_divergence", "kl_real_degraded")}


def _sft(recipe: DemoRecipe, *, model: str, out: str, seed: int, role: str) -> dict[str, Any]:
    teacher = role == "teacher"
    task = copy.deepcopy(recipe.task if teacher else {**recipe.task, **recipe.student_task})
    cfg: dict[str, Any] = {
        "method": "sft",
        "output_dir": out,
        "seed": seed,
        "student": {"path": model},
        "data": {"train": f"synthetic:{recipe.n_train}",
                 "eval": f"synthetic:{recipe.n_eval if teacher else recipe.student_check_prompts}",
                 "synthetic": task},
        "optim": {"lr": recipe.sft_lr, "betas": [0.9, 0.98], "warmup_steps": recipe.sft_warmup,
                  # The cold start may stop early, so its schedule must not depend on the planned length.
                  "schedule": "cosine" if teacher else "constant", "min_lr_ratio": 0.05, "max_grad_norm": 1.0},
        "sft": {"target": "solution", "max_length": recipe.max_new_tokens},
        # Greedy exact match on held-out images: once at the end for the teacher; every few steps for the
        # student, whose cold start stops as soon as it reads `student_stop_accuracy` of them.
        "eval": {"every": 0 if teacher else recipe.student_check_every, "k": 1, "greedy": True,
                 "max_new_tokens": recipe.max_new_tokens, "measure_va": False},
        "prompts_per_step": recipe.sft_batch,
        "steps": recipe.teacher_sft_steps if teacher else recipe.student_max_steps,
        "log_every": 10,
    }
    if not teacher:
        cfg["eval"]["stop_at_accuracy"] = recipe.student_stop_accuracy
    return cfg


def _distill(recipe: DemoRecipe, method: str, *, student: str, teacher: str, out: str, seed: int) -> dict[str, Any]:
    variant = VA_OPD_VARIANTS.get(method)
    if variant is not None:
        method = "va_opd"
    cfg: dict[str, Any] = {
        "method": method,
        "output_dir": out,
        "seed": seed,
        "student": {"path": student},
        "data": {"train": f"synthetic:{recipe.n_train}", "eval": f"synthetic:{recipe.n_eval}",
                 "synthetic": copy.deepcopy(recipe.task)},
        "rollout": {"k": recipe.rollout_k, "max_new_tokens": recipe.max_new_tokens, "temperature": 1.0, "top_p": 1.0},
        "optim": {"lr": recipe.distill_lr, "betas": [0.9, 0.98], "warmup_steps": recipe.distill_warmup,
                  "schedule": recipe.distill_schedule, "min_lr_ratio": 0.1, "max_grad_norm": 1.0},
        # avg@k at T = 1.0 on held-out images, and the teacher-scored mean VA of those rollouts.
        "eval": {"every": recipe.eval_every, "k": recipe.eval_k, "temperature": 1.0, "greedy": False,
                 "max_new_tokens": recipe.max_new_tokens, "measure_va": True},
        "prompts_per_step": recipe.prompts_per_step,
        "steps": recipe.distill_steps,
        "log_every": 5,
    }
    # GRPO has no teacher in its loss, but the teacher still scores eval rollouts for mean VA.
    cfg["teacher"] = {"path": teacher}
    if method == "va_opd":
        cfg["va_opd"] = {**VA_OPD_PARAMS, "degrade": "pixelate", "pixelate_ratio": 0.1, **(variant or {})}
    if method in ("opd", "va_opd"):
        cfg["loss"] = {"divergence": "reverse_kl"}
    if method == "grpo":
        cfg["grpo"] = {"reward": "accuracy"}
    return cfg


def method_configs(recipe: DemoRecipe, *, teacher_init: str, student_init: str, teacher: str, student: str,
                   runs_dir: str, seed: int, with_grpo: bool = False,
                   methods: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """`vlm-opd train` config mappings of every demo run, keyed by run name.

    Args:
        teacher_init / student_init: freshly built (random) teacher and student directories.
        teacher / student: the trained teacher and the cold-started student (the SFT runs' outputs).
        runs_dir: parent of every run's output_dir.
        seed: the demo seed (student cold start, distillation, evaluation).
        methods: distillation runs (names of DISTILL_METHODS; default opd and va_opd).
    """
    runs = {
        "teacher_sft": _sft(recipe, model=teacher_init, out=f"{runs_dir}/teacher_sft", seed=recipe.teacher_seed,
                            role="teacher"),
        "student_sft": _sft(recipe, model=student_init, out=f"{runs_dir}/student_sft", seed=seed, role="student"),
    }
    for m in methods or ["opd", "va_opd"]:
        runs[m] = _distill(recipe, m, student=student, teacher=teacher, out=f"{runs_dir}/{m}", seed=seed)
    if with_grpo:
        runs["grpo"] = _distill(recipe, "grpo", student=student, teacher=teacher, out=f"{runs_dir}/grpo", seed=seed)
    return runs


# Paths the checked-in configs/demo/*.yaml use: those of `vlm-opd demo` with its default --out.
DEFAULT_PATHS = {
    "teacher_init": "demo-report/models/teacher-init",
    "student_init": "demo-report/models/student-init",
    "teacher": "demo-report/models/teacher",
    "student": "demo-report/models/student-coldstart",
    "runs_dir": "demo-report/runs",
}

_CONFIG_HEADER = """\
# Generated from vlm_opd.demo.recipe.FULL by `vlm_opd.demo.recipe.write_configs("configs/demo")`;
# tests/demo checks that this file matches the recipe. Paths are those `vlm-opd demo` (default --out
# demo-report) leaves behind, so after a demo this runs as is:
#   vlm-opd train configs/demo/{name}.yaml
"""


def config_files(recipe: DemoRecipe = FULL, seed: int = 0) -> dict[str, str]:
    """{file name: YAML text} of the checked-in demo configs (GRPO included)."""
    import yaml

    runs = method_configs(recipe, seed=seed, with_grpo=True, **DEFAULT_PATHS)
    return {f"{name}.yaml": _CONFIG_HEADER.format(name=name) + yaml.safe_dump(cfg, sort_keys=False)
            for name, cfg in runs.items()}


def write_configs(directory: str | Path, recipe: DemoRecipe = FULL) -> list[Path]:
    """(Re)write configs/demo/*.yaml from `recipe`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [atomic_write_text(directory / name, text) for name, text in config_files(recipe).items()]
