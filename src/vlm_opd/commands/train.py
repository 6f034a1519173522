"""`vlm-opd train CONFIG.yaml [key=value ...]`: run any method (sft, kd, opd, va_opd, grpo, papo, vold)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a student with sft | kd | opd | va_opd | grpo | papo | vold",
        description="Train a student. CONFIG is a YAML file (see configs/); key=value pairs override it "
                    "with dotted keys, e.g. optim.lr=1e-5 rollout.k=8 va_opd.reweight=false. "
                    "Use `accelerate launch -m vlm_opd.cli train ...` for several processes/GPUs.",
    )
    p.add_argument("config", nargs="?", help="YAML config file")
    p.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys)")
    p.add_argument("--help-config", action="store_true", help="list every config key with its default and help")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlm_opd.config import describe_config, load_config
    from vlm_opd.errors import ConfigError

    if args.help_config:
        for key, default, help_text in describe_config():
            print(f"{key:32s} {default:24s} {help_text}" if default else f"\n[{key}] {help_text}")
        return 0
    if args.config is None:
        raise ConfigError("a config file is required (e.g. vlm-opd train configs/demo/va_opd.yaml)")
    overrides = list(args.overrides)
    if "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        overrides.insert(0, args.config)
        args.config = None
    cfg = load_config(args.config, overrides)

    import torch.distributed as dist

    from vlm_opd.cli import say
    from vlm_opd.train.fsdp import close_process_group
    from vlm_opd.train.trainer import TrainingInterrupted, train

    had_group = dist.is_available() and dist.is_initialized()  # the caller's: not ours to close

    def our_peers_group() -> bool:  # opened by this run's launch, with peers (a one-process group may be vLLM's)
        return not had_group and dist.is_initialized() and dist.get_world_size() > 1

    try:
        result = train(cfg, progress=not args.no_progress)
    except TrainingInterrupted as stop:
        say(f"vlm-opd train: {stop}")
        if our_peers_group():
            dist.destroy_process_group()  # locally (the peers are stopping too): see cli._leave_process_group
        return 130 if stop.signum == 2 else 143
    if our_peers_group():
        close_process_group()
    if not result.is_main_process:
        return 0
    print(f"final model: {result.final_dir}")
    print(f"metrics: {result.metrics_path}")
    if result.skipped_steps:
        print(f"skipped steps (non-finite loss, nan_policy=skip): {result.skipped_steps}")
    return 0

