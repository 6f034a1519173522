"""Command-line entry point: `vlm-opd <command> ...`.

Each command lives next to the code it drives and exposes `register(subparsers)`, which adds its
parser and sets `func` (a callable taking the parsed args and returning an exit code). Modules are
imported when the parser is built, so they must keep heavy imports (torch, transformers) inside
their run functions.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vlm_opd.errors import VlmOpdError

# Order here is the order in `vlm-opd --help`.
COMMAND_MODULES = [
    "vlm_opd.commands.demo",
    "vlm_opd.commands.train",
    "vlm_opd.commands.plan",
    "vlm_opd.commands.generate_traces",
    "vlm_opd.commands.synth",
    "vlm_opd.commands.eval",
    "vlm_opd.commands.probe",
    "vlm_opd.commands.report",
    "vlm_opd.commands.build_tiny",
    "vlm_opd.commands.docs",
    "vlm_opd.commands.env",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-opd",
        description="On-policy distillation for vision-language models (OPD, VA-OPD, VOLD, GRPO, PAPO).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def say(line: str) -> None:
    """One line to stderr in one write: the processes of a multi-process run share the launcher's stderr
    pipe and run unbuffered (PYTHONUNBUFFERED), where `print` writes the text and its newline separately,
    so two processes' errors would run together on one line."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    # `train CONFIG --no-progress key=value`: argparse stops collecting positionals at the first option,
    # so key=value pairs that follow an option arrive here; commands that take overrides accept them.
    if unknown and hasattr(args, "overrides") and all("=" in u and not u.startswith("-") for u in unknown):
        args.overrides = list(args.overrides or []) + unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    had_group, finished = _peers_group_open(), False
    try:
        code = int(args.func(args) or 0)
        finished = True
        return code
    except VlmOpdError as err:
        if args.debug:
            raise
        say(f"vlm-opd {args.command}: error: {err}")
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        return 0
    except KeyboardInterrupt:
        say(f"vlm-opd {args.command}: interrupted")
        return 130
    finally:
        if not finished and not had_group and _peers_group_open():
            _leave_process_group()


def _peers_group_open() -> bool:
    """A process group with other processes in it is open (a launched multi-process run)."""
    dist = sys.modules.get("torch.distributed")  # never import torch just to find there is nothing open
    return bool(dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def _leave_process_group() -> None:
    """Destroy the multi-process group a command opened when it ends in an error, an interrupt or a crash
    (the success path of `train` closes it together with its peers). A process that exits with a gloo
    group open aborts at interpreter shutdown about one time in three on a loaded machine ("terminate
    called without an active exception", SIGABRT), which would replace the error's exit code and look
    like a crash. Local only: no barrier, since the other processes may not be leaving. A one-process
    group is left alone: it may be a vLLM engine's in the calling process, which vLLM keeps using."""
    import torch.distributed as dist

    dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
