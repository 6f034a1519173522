import json
import subprocess
import sys

from vlm_opd.cli import build_parser, main


def test_help_lists_every_registered_command(capsys):
    parser = build_parser()
    help_text = parser.format_help()
    sub_actions = [a for a in parser._actions if a.dest == "command"]
    assert sub_actions, "no subcommands registered"
    for name in sub_actions[0].choices:
        assert name in help_text


def test_env_json_runs():
    out = subprocess.run(
        [sys.executable, "-m", "vlm_opd.cli", "env", "--json"], capture_output=True, text=True, check=True
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["torch"].startswith("2.")


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_an_error_leaves_the_callers_one_process_group_open(tmp_path):
    """A one-process group open before `main` (an in-process vLLM engine's) survives a failing command."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        assert main(["train", str(tmp_path / "missing.yaml")]) == 2
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()
