"""`python tests/train/fsdp_entry.py train CONFIG ...`: the CLI with two test hooks, for multi-process runs
(a pytest monkeypatch does not reach the processes of `accelerate launch`).

- Rewards vary within each prompt group (a deterministic function of the text), so the policy gradient
  of GRPO / PAPO / VOLD is not identically zero on a random tiny model that never answers right.
- `VLM_OPD_TEST_CRASH_AT=N`: the N-th call of the step function raises in every process at the same
  point (a crash after the checkpoints written so far).
"""

import os
import sys

from vlm_opd.train import trainer

trainer._reward_fn = lambda cfg, get_reward: (lambda text, example: float(sum(map(ord, text)) % 2))

crash_at = int(os.environ.get("VLM_OPD_TEST_CRASH_AT", "0"))
if crash_at:
    calls = {"n": 0}

    def _wrap(fn):
        def step(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise RuntimeError(f"simulated crash at step-function call {crash_at}")
            return fn(*args, **kwargs)

        return step

    for name in list(trainer.STEP_FUNCTIONS):
        trainer.STEP_FUNCTIONS[name] = _wrap(trainer.STEP_FUNCTIONS[name])

if __name__ == "__main__":
    from vlm_opd.cli import main

    sys.exit(main(sys.argv[1:]))
