"""Initialise an FSDP2-sharded model with fastinit: each rank allocates and writes only its own
shard, with no collective, and the gathered weights equal the unsharded model's.

Run it with torchrun (CPU and gloo where there is no GPU, one GPU per rank and NCCL otherwise):

    torchrun --nproc-per-node 2 examples/sharded_init.py
"""
import gc
import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import fastinit
from fastinit.llama import Llama, LlamaConfig

SEED = 1234
CONFIG = LlamaConfig(vocab_size=1024, hidden_size=256, intermediate_size=688, num_layers=4,
                     num_heads=8, max_positions=256)


def main() -> None:
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh(device_type, (world_size,))

    with torch.device("meta"):
        model = Llama(CONFIG)      # no memory, no init
    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    result = fastinit.materialize(model, device=device_type, seed=SEED)  # this rank's shards only

    local = sum(p.to_local().numel() for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())
    print(f"rank {rank}/{world_size}: wrote {local:,} of {total:,} parameter elements "
          f"({len(result.fused)} tensors)", flush=True)

    # Check: gather every parameter and compare with the same model initialised unsharded.
    gathered = {name: p.full_tensor().cpu() for name, p in model.named_parameters()}
    if rank == 0:
        reference = Llama(CONFIG)
        fastinit.reset_parameters(reference, seed=SEED)
        equal = all(torch.equal(gathered[name], p) for name, p in reference.named_parameters())
        print(f"gathered weights equal to the unsharded init with seed {SEED}: {equal}")
    # Shut down in order: free the sharded model (FSDP2 state that refers to the process
    # group) while the interpreter is fully alive, then leave the group together.
    del model, gathered
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0 and not equal:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
