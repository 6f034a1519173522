"""`python tests/train/cli_exit_entry.py ARGS`: the CLI, then one line saying whether a process group is
still open when `main` has returned (a launched process must not exit with one open: see cli.py)."""

import sys

import torch.distributed as dist

from vlm_opd.cli import main

code = main(sys.argv[1:])
sys.stderr.write(f"process group open after main: {dist.is_initialized()}\n")
sys.exit(code)
