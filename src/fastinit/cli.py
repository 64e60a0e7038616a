"""Command line: `fastinit bench` (also `python -m fastinit bench`)."""
from __future__ import annotations

import argparse
import platform
import sys

import torch


def _bench(args) -> int:
    from . import backend_info
    from .bench import format_table, run_bench

    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    info = backend_info()
    print(f"fastinit bench: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, cpu SIMD {info['cpu_simd']}")
    print(f"backends available: {', '.join(info['available'])}"
          + "".join(f"; {k} unavailable ({v})" for k, v in info["unavailable"].items()))
    for device in devices:
        if device.startswith("cuda"):
            print(f"device {device}: {torch.cuda.get_device_name(torch.device(device))}")
        rows = run_bench(device, args.dtype, args.numel, args.repeats, args.reference_numel)
        print(format_table(rows))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastinit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="compare every backend with torch.nn.init and fill_")
    bench.add_argument("--device", action="append", help="cpu, cuda, cuda:1 (repeatable)")
    bench.add_argument("--dtype", action="append", choices=["float32", "bfloat16", "float16", "float64"],
                       help="dtypes to run (repeatable; default float32 and bfloat16)")
    bench.add_argument("--numel", type=int, default=16 * 2**20, help="elements per tensor")
    bench.add_argument("--reference-numel", type=int, default=2**20,
                       help="elements per tensor for the slow reference backend")
    bench.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    bench.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    if getattr(args, "dtype", None) is None and args.command == "bench":
        args.dtype = ["float32", "bfloat16"]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
