"""Command line: `fastinit demo | bench | explain` (also `python -m fastinit ...`)."""
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


def _demo(args) -> int:
    if args.model == "hf":
        from .hf_demo import run_hf_demo

        run_hf_demo(args.params, args.seed)
        return 0
    from .demo import run_demo

    run_demo(args.params, getattr(torch, args.dtype), args.device, args.seed)
    return 0


def _explain(args) -> int:
    import importlib

    from .model import explain, format_explain

    module_name, _, factory_name = args.target.partition(":")
    if not factory_name:
        raise SystemExit(f"expected PACKAGE.MODULE:FACTORY, got {args.target!r}")
    factory = getattr(importlib.import_module(module_name), factory_name)
    with torch.device("meta"):
        model = factory()
    print(format_explain(explain(model)))
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
    demo = sub.add_parser("demo", help="materialise a ~1.3B Llama-style model: fastinit vs torch")
    demo.add_argument("--params", type=float, default=1.3e9, help="parameter count (approximate)")
    demo.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    demo.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--model", default="llama", choices=["llama", "hf"],
                      help="hf: a Hugging Face LlamaForCausalLM (float32, cpu), fastinit against "
                           "HF's own paths; needs transformers")
    demo.set_defaults(func=_demo)
    explain = sub.add_parser("explain", help="print the init of every parameter of a model")
    explain.add_argument("target", help="PACKAGE.MODULE:FACTORY, e.g. fastinit.llama:tiny_llama")
    explain.set_defaults(func=_explain)
    args = parser.parse_args(argv)
    if getattr(args, "dtype", None) is None and args.command == "bench":
        args.dtype = ["float32", "bfloat16"]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
