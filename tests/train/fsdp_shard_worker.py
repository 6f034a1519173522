"""`torchrun --nproc_per_node 2 tests/train/fsdp_shard_worker.py MODEL_DIR OUT_DIR`: shard a tiny model with
the trainer's `shard_model` and write, as OUT_DIR/rank<N>.json, what `test_fsdp` checks: each process's
share of every sharded parameter, which tensors are whole after a forward, and that `gathered` runs
uneven numbers of forward passes on the two processes without a collective."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from vlm_opd.models import load_model
from vlm_opd.train import fsdp

dist.init_process_group("gloo")
rank = dist.get_rank()
lm = load_model(sys.argv[1])
model = lm.model
total = {name: p.numel() for name, p in model.named_parameters()}
fsdp.shard_model(model, torch.device("cpu"))
out = {"rank": rank, "fractions": fsdp.local_shard_fraction(model), "numel": total}

ids = torch.tensor([[5, 6, 7, 8]])
mask = torch.ones_like(ids)
with torch.no_grad():
    model(input_ids=ids, attention_mask=mask)
layer0 = fsdp.decoder_layers(model)[0]
out["after_forward"] = {"lm_head_whole": not isinstance(model.get_output_embeddings().weight, DTensor),
                        "layer_sharded": isinstance(next(layer0.parameters()), DTensor)}
fsdp.release(model)
out["after_release_lm_head_sharded"] = isinstance(model.get_output_embeddings().weight, DTensor)

# Inside `gathered` each process may run a different number of forwards (rollouts of different
# lengths): no collective may run there, or this would hang.
with torch.no_grad(), fsdp.gathered(model):
    for _ in range(1 + 3 * rank):
        model(input_ids=ids, attention_mask=mask)
    out["gathered_all_whole"] = not any(isinstance(p, DTensor) for p in model.parameters())
out["after_gathered"] = {"lm_head_sharded": isinstance(model.get_output_embeddings().weight, DTensor),
                         "layer_sharded": isinstance(next(layer0.parameters()), DTensor)}
with torch.no_grad():  # the default resharding is back: the root stays whole after a forward, layers do not
    model(input_ids=ids, attention_mask=mask)
out["after_gathered_forward"] = {"lm_head_whole": not isinstance(model.get_output_embeddings().weight, DTensor),
                                 "layer_sharded": isinstance(next(layer0.parameters()), DTensor)}
Path(sys.argv[2], f"rank{rank}.json").write_text(json.dumps(out))
del model, lm, layer0
fsdp.close_process_group()
