"""Tensor-parallel init of a Llama-shaped model, per rank: every rank builds the model on meta,
shards it with ColwiseParallel (q, k, v, gate, up: Shard(0)) and RowwiseParallel (o, down:
Shard(1)) over a gloo mesh, and times ``fastinit.materialize(model, "cpu", seed=0)``; rank 0
prints one JSON line with every rank's median seconds and the descriptors each rank sent.

    python benchmarks/tp_init.py [--world 2] [--repeats 3] [--layers 4]

Run by benchmarks/test_layouts.py with this checkout's interpreter and a baseline's, in turn.
Uses only what every fastinit version has (fastinit.llama, materialize).
"""
import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import time


def worker(args) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    import fastinit
    from fastinit.backends import cpu
    from fastinit.llama import Llama, LlamaConfig

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    config = LlamaConfig(num_layers=args.layers)
    descriptors = []
    real_run = cpu.run

    def counting_run(fills, *a, **k):
        descriptors.append(len(fills))
        return real_run(fills, *a, **k)

    cpu.run = counting_run
    times = []
    for _ in range(args.repeats):
        with torch.device("meta"):
            model = Llama(config)
        plan = {f"layers.{i}.{name}": style() for i in range(config.num_layers)
                for name, style in [("self_attn.q_proj", ColwiseParallel),
                                    ("self_attn.k_proj", ColwiseParallel),
                                    ("self_attn.v_proj", ColwiseParallel),
                                    ("self_attn.o_proj", RowwiseParallel),
                                    ("mlp.gate_proj", ColwiseParallel),
                                    ("mlp.up_proj", ColwiseParallel),
                                    ("mlp.down_proj", RowwiseParallel)]}
        parallelize_module(model, mesh, plan)
        descriptors.clear()
        dist.barrier()
        t0 = time.perf_counter()
        fastinit.materialize(model, "cpu", seed=0)
        times.append(time.perf_counter() - t0)
        del model
    result = {"median_s": statistics.median(times), "descriptors": sum(descriptors)}
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, result)
    if dist.get_rank() == 0:
        print(json.dumps({"ranks": gathered, "fastinit": fastinit.__file__}))
    dist.destroy_process_group()


def launch(python: str, world: int, repeats: int, layers: int, env=None) -> dict:
    """Run the worker on `world` ranks with interpreter `python` (and `env` added to the
    environment); rank 0's JSON line."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(world):
        rank_env = dict(os.environ, **(env or {}), RANK=str(rank), WORLD_SIZE=str(world),
                        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                        PYTHONDONTWRITEBYTECODE="1")
        procs.append(subprocess.Popen(
            [python, os.path.abspath(__file__), "--worker", "--repeats", str(repeats),
             "--layers", str(layers)], env=rank_env, stdout=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"tp_init workers exited with {[p.returncode for p in procs]}")
    return json.loads(outputs[0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    if args.worker:
        worker(args)
    else:
        print(json.dumps(launch(sys.executable, args.world, args.repeats, args.layers)))


if __name__ == "__main__":
    main()
