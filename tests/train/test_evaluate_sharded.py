"""In-training evaluation shared out over processes: batch i on process i mod N, results equal one process's."""

from types import SimpleNamespace

import pytest
import torch

from vlm_opd.train import evaluate as ev


def _ctx(measure_va):
    cfg = SimpleNamespace(eval=SimpleNamespace(measure_va=measure_va, k=1), data=SimpleNamespace(system_prompt=None))
    model = torch.nn.Linear(1, 1)
    return SimpleNamespace(cfg=cfg, teacher=SimpleNamespace(is_vision=True, model=model), degrade=lambda im: im,
                           student_for_generation=lambda: SimpleNamespace(model=torch.nn.Linear(1, 1)))


def _fake_batch(calls):
    def batch(ctx, lm, chunk, seed, measure_va):
        calls.append(seed)
        # deterministic in the batch (its seed = base seed + start): what a real batch's keyed rollouts give
        return [float(seed % 2)] * len(chunk), [float(seed)] * len(chunk), [torch.full((2,), float(seed))]
    return batch


@pytest.mark.parametrize("sharded_teacher", [False, True])
def test_two_processes_share_the_batches_and_return_the_one_process_result(monkeypatch, sharded_teacher):
    examples = [SimpleNamespace(answer="1")] * 5  # batch_prompts=2: batches at 0, 2, 4 -> 2 on rank 0, 1 on rank 1
    monkeypatch.setattr(ev, "is_sharded", lambda model: sharded_teacher)
    one_calls: list[int] = []
    monkeypatch.setattr(ev, "_evaluate_batch", _fake_batch(one_calls))
    one = ev.evaluate_student(_ctx(True), examples, seed=100, batch_prompts=2)
    assert one_calls == [100, 102, 104]

    import torch.distributed as dist

    class Sent(Exception):
        pass

    calls, sent = {0: [], 1: []}, {}

    def run(rank, record, stop=False):
        def gather(out, obj):  # all_gather_object, played one process at a time
            sent[rank] = obj
            if stop:
                raise Sent
            out[:] = [sent[0], sent[1]]
        monkeypatch.setattr(ev, "_evaluate_batch", _fake_batch(record))
        monkeypatch.setattr(dist, "all_gather_object", gather)
        return ev.evaluate_student(_ctx(True), examples, seed=100, batch_prompts=2, rank=rank, nproc=2)

    with pytest.raises(Sent):  # rank 1 evaluates its share and sends it
        run(1, calls[1], stop=True)
    two_rank0 = run(0, calls[0])
    two_rank1 = run(1, [])
    assert calls[0] == [100, 104]
    # a sharded teacher needs as many collective forwards on every process: rank 1 repeats its batch once
    assert calls[1] == ([102, 102] if sharded_teacher else [102])
    assert two_rank0 == two_rank1 == one
