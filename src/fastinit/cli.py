"""Command line: `fastinit demo | bench | explain` (also `python -m fastinit ...`).

A bad argument (an unknown device, a malformed `--params`, a target that is not
MODULE:FACTORY) ends in one line on stderr and exit status 2; something the arguments name but
this machine or the import system cannot provide (a GPU that is not there, a module or
attribute that does not exist, a factory that fails) ends in one line and exit status 1.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import sys
import time

import torch

from .backends import BACKENDS

USAGE_ERROR = 2     # the command line itself is wrong
RUNTIME_ERROR = 1   # it names something that is not there or fails

# Decimal suffixes (a parameter count: 1.3B) and binary ones (a tensor size: 4Mi = 4 * 2**20).
_COUNT_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12,
                   "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}
COUNT_HELP = "K, M, G (or B), T: powers of 1000; Ki, Mi, Gi, Ti: powers of 1024"


class CommandError(Exception):
    """One line for the user and the exit status to end with."""

    def __init__(self, message: str, status: int = RUNTIME_ERROR):
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `fastinit bench: error: ... (see fastinit bench --help)`."""

    def error(self, message):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_count(text: str) -> int:
    """A count such as ``100M``, ``1.3B``, ``7e9``, ``350k``, ``4Mi`` or ``125000000`` as an int.

    Args:
        text: a positive number, optionally followed by K (10^3), M (10^6), B or G (10^9),
            T (10^12), or Ki (2^10), Mi (2^20), Gi (2^30), Ti (2^40), case-insensitive; ``_``
            separators are allowed.

    Returns:
        The count, rounded to the nearest integer.

    Raises:
        argparse.ArgumentTypeError: `text` is not such a number, or is not positive.
    """
    match = re.fullmatch(
        r"\s*([0-9][0-9_]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]{0,2})\s*", text)
    suffix = match.group(2).upper() if match else ""
    if match is None or suffix not in _COUNT_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a count: use a number with an optional suffix ({COUNT_HELP}), "
            f"e.g. 100M, 1.3B, 7e9, 4Mi")
    value = round(float(match.group(1).replace("_", "")) * _COUNT_SUFFIXES[suffix])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive count")
    return value


def positive_int(text: str) -> int:
    """An int of at least 1, for argparse.

    Raises:
        argparse.ArgumentTypeError: `text` is not such an int.
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def backend_list(text: str) -> list[str]:
    """Backend names, comma-separated, for argparse (``cpu,reference``).

    Raises:
        argparse.ArgumentTypeError: a name that is not a backend, or none at all.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of backends: choose from {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


def available_devices() -> list[str]:
    """The devices this machine has, as `--device` takes them: cpu, then cuda:0, cuda:1, ..."""
    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())
                      if torch.cuda.is_available()]


def resolve_device(name: str) -> torch.device:
    """The torch.device `name` denotes, checked against the devices this machine has.

    Raises:
        CommandError: `name` is not a device name (status 2), or not a device here (status 1).
    """
    here = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise CommandError(f"unknown device {name!r}; devices here: {here}", USAGE_ERROR) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise CommandError(f"device {name!r} is not supported by fastinit's command line; "
                           f"devices here: {here}", USAGE_ERROR)
    if not torch.cuda.is_available():
        why = ("this torch is built without CUDA" if torch.version.cuda is None
               else "no usable GPU or driver found")
        raise CommandError(f"device {name!r} is not available: {why}; devices here: {here}")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise CommandError(f"device {name!r} does not exist; devices here: {here}")
    return device


def device_label(device: torch.device) -> str:
    """`cpu`, or `cuda:0 (NVIDIA H100 80GB HBM3)`."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def load_model(target: str) -> torch.nn.Module:
    """The module `target` (``PACKAGE.MODULE:FACTORY``) builds, built on the meta device under
    `fastinit.meta_init()` (its constructor's init is recorded, for `explain` and `materialize`).

    The current folder is searched first, as ``python -m`` would, so ``mymodels:small`` finds
    ``./mymodels.py``. FACTORY is a class or function called without arguments.

    Raises:
        CommandError: a malformed target (status 2); a module or attribute that is not there,
            a factory that fails or does not return an nn.Module (status 1).
    """
    module_name, _, factory_name = target.partition(":")
    if not module_name or not factory_name:
        raise CommandError(f"expected PACKAGE.MODULE:FACTORY (e.g. fastinit.llama:tiny_llama), "
                           f"got {target!r}", USAGE_ERROR)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the module's own code failed while importing
        raise CommandError(f"importing {module_name!r} failed: {type(exc).__name__}: "
                           f"{exc}") from None
    factory = module
    for part in factory_name.split("."):
        if not hasattr(factory, part):
            public = sorted(n for n in dir(module) if not n.startswith("_")
                            and callable(getattr(module, n)))
            raise CommandError(f"module {module_name!r} has no attribute {factory_name!r}; "
                               f"its callables: {', '.join(public) or 'none'}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise CommandError(f"{target!r} is a {type(factory).__name__}, not a class or function")
    from .model import meta_init

    try:
        with meta_init():
            model = factory()
    except Exception as exc:
        raise CommandError(f"calling {target}() failed (the factory must build the model "
                           f"without arguments): {type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise CommandError(f"{target}() returned a {type(model).__name__}, not a "
                           f"torch.nn.Module")
    return model


def _short_reason(why: str) -> str:
    """A backend's unavailability reason, in a few words."""
    if "was not built" in why:
        return ("not built (this torch has no CUDA)" if torch.version.cuda is None
                else "not built (no nvcc at install time)")
    if "InsufficientDriver" in why or "no CUDA driver" in why:
        return "no GPU driver here"
    if "NoDevice" in why:
        return "no GPU here"
    if "No module named 'triton'" in why:
        return "triton not installed"
    first = why.split(";")[0]
    return first if len(first) <= 80 else first[:77] + "..."


def install_summary() -> str:
    """One line: `fastinit 0.1.0: cpu (avx512), triton; cuda: no GPU driver here`."""
    from . import __version__, backend_info

    info = backend_info()
    simd = (info["cpu_simd"] or "").split(" ")[0]
    available = [f"cpu ({simd})" if name == "cpu" and simd else name
                 for name in info["available"] if name != "reference"]
    missing = [f"{name}: {_short_reason(why)}" for name, why in info["unavailable"].items()
               if name != "reference"]
    return "; ".join([f"fastinit {__version__}: {', '.join(available) or 'reference only'}"]
                     + missing)


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and the backends usable here, then exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(install_summary())
        parser.exit()


def _require_plotting() -> None:
    """Fail before any work when --plot is given and matplotlib is missing."""
    from .plots import require_matplotlib

    try:
        require_matplotlib()
    except ImportError as exc:
        raise CommandError(str(exc)) from None


def _bench(args) -> int:
    from .bench import (DISTRIBUTIONS, format_table, plot_sizes, run_bench, run_sweep,
                        runs_on)

    devices = [resolve_device(d) for d in args.device] if args.device else \
        [torch.device("cuda" if torch.cuda.is_available() else "cpu")]
    if args.plot:
        _require_plotting()
    print(f"fastinit bench: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads; backends: {install_summary()}")
    if args.plot:
        from .backends import get_backend, set_backend
        from .errors import BackendUnavailableError
        from .plots import plot_sweep
        if args.backends and len(args.backends) > 1:
            raise CommandError(f"--plot times one backend; --backends names "
                               f"{len(args.backends)}", USAGE_ERROR)
        backend = args.backends[0] if args.backends else "auto"
        device = devices[0]
        previous = get_backend()
        try:
            set_backend(backend)
        except BackendUnavailableError as exc:
            raise CommandError(str(exc)) from None
        if not runs_on(backend, device):
            set_backend(previous)
            raise CommandError(f"backend {backend!r} does not fill {device} tensors")
        sizes = plot_sizes(args.max_numel)
        print(f"throughput sweep on {device_label(device)}, {args.dtype[0]}, backend {backend}: "
              f"{len(sizes)} sizes from {sizes[0]:,} to {sizes[-1]:,} elements x "
              f"{len(DISTRIBUTIONS)} distributions")
        try:
            points = run_sweep(device, args.dtype[0], sizes, progress=sys.stderr)
        finally:
            set_backend(previous)
        title = (f"fastinit bench --plot, {args.dtype[0]}, {device_label(device)}, backend "
                 f"{backend}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        plot_sweep(points, args.plot, title)
        print(f"wrote {args.plot}")
        return 0
    for device in devices:
        print(f"device {device_label(device)}")
        rows = run_bench(str(device), args.dtype, args.numel, args.repeats, args.reference_numel,
                         progress=sys.stderr, backend_names=args.backends)
        if not rows:
            raise CommandError(f"none of the backends {', '.join(args.backends)} runs on "
                               f"{device}: {install_summary()}")
        print(format_table(rows))
    return 0


def _demo(args) -> int:
    if args.model == "hf":
        from .hf_demo import run_hf_demo

        run_hf_demo(args.params, args.seed)
        return 0
    from .demo import run_demo

    device = resolve_device(args.device) if args.device else None
    try:
        run_demo(args.params, getattr(torch, args.dtype), device, args.seed, args.repeats)
    except (MemoryError, torch.cuda.OutOfMemoryError) as exc:
        raise CommandError(f"out of memory: {str(exc).splitlines()[0]}") from None
    return 0


def _explain(args) -> int:
    from .model import explain, format_explain

    if args.plot:
        _require_plotting()
    model = load_model(args.target)
    print(format_explain(explain(model)))
    if args.plot:
        from .check import density_checks, format_verdict
        from .model import materialize
        from .plots import plot_density_checks

        print(f"materialising {args.target} on cpu with seed {args.seed} to check its values",
              file=sys.stderr)
        materialize(model, "cpu", seed=args.seed)
        checks = density_checks(model)
        if not checks:
            raise CommandError(f"{args.target} has no randomly initialised parameter to check")
        plot_density_checks(checks, args.plot, f"{args.target}, seed {args.seed}")
        print(format_verdict(checks))
        print(f"wrote {args.plot}")
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default unless it is None or its help already says it."""

    def _get_help_string(self, action):
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The `fastinit` argument parser, with its three subcommands."""
    parser = _Parser(prog="fastinit", formatter_class=_HelpFormatter,
                     description="fastinit's command line: materialise a Llama-style model "
                                 "against torch (demo), time every backend (bench), show a "
                                 "model's init (explain). Also `python -m fastinit`.",
                     epilog="Errors end in one line: exit status 2 for a bad argument, 1 for "
                            "something this machine or the import system cannot provide.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    formatter = _HelpFormatter

    bench = sub.add_parser("bench", formatter_class=formatter,
                           help="compare every backend with torch.nn.init and fill_")
    bench.add_argument("--device", action="append",
                       help="cpu, cuda or cuda:N (repeatable; default: cuda if present, else cpu)")
    bench.add_argument("--dtype", action="append",
                       choices=["float32", "bfloat16", "float16", "float64"],
                       help="dtype to run (repeatable; default: float32 and bfloat16; --plot "
                            "uses the first)")
    bench.add_argument("--backends", type=backend_list, default=None, metavar="NAME[,NAME]",
                       help="backends to time, comma-separated, from "
                            f"{', '.join(BACKENDS)} (default: every one available here "
                            "but reference, the NumPy statement of the contract, which is "
                            "slow by design)")
    bench.add_argument("--numel", type=parse_count, default="16Mi",
                       help=f"elements per tensor ({COUNT_HELP})")
    bench.add_argument("--reference-numel", type=parse_count, default="1Mi",
                       help="elements per tensor for the reference backend, when --backends "
                            "names it")
    bench.add_argument("--repeats", type=positive_int, default=5,
                       help="timed repeats (median reported)")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="instead of the table, plot throughput against tensor size (1Ki to "
                            "--max-numel elements) for fastinit, torch.nn.init and fill_")
    bench.add_argument("--max-numel", type=parse_count, default="256Mi",
                       help=f"largest tensor of --plot ({COUNT_HELP}; e.g. 64Mi)")
    bench.set_defaults(func=_bench)

    demo = sub.add_parser("demo", formatter_class=formatter,
                          help="materialise a ~1.3B Llama-style model: fastinit vs torch")
    demo.add_argument("--params", type=parse_count, default="1.3B",
                      help="parameter count, approximate (e.g. 100M, 1.3B, 7e9)")
    demo.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                      help="dtype of the parameters")
    demo.add_argument("--device", default=None,
                      help="cpu, cuda or cuda:N (default: cuda if present, else cpu)")
    demo.add_argument("--seed", type=int, default=0, help="seed of fastinit's init")
    demo.add_argument("--repeats", type=positive_int, default=3,
                      help="runs of each fast phase (fastinit and the fill_ floor); the median "
                           "is reported with the spread")
    demo.add_argument("--model", default="llama", choices=["llama", "hf"],
                      help="hf: a Hugging Face LlamaForCausalLM (float32, cpu), fastinit against "
                           "HF's own paths; needs transformers")
    demo.set_defaults(func=_demo)

    explain = sub.add_parser("explain", formatter_class=formatter,
                             help="print the init of every parameter of a model")
    explain.add_argument("target",
                         help="PACKAGE.MODULE:FACTORY, a class or function building the model "
                              "without arguments, e.g. fastinit.llama:tiny_llama (the current "
                              "folder is searched first)")
    explain.add_argument("--plot", metavar="FILE.png",
                         help="also materialise the model on the CPU and plot each random "
                              "parameter's histogram against the density it should follow, "
                              "with the Kolmogorov-Smirnov statistic")
    explain.add_argument("--seed", type=int, default=0, help="seed used by --plot")
    explain.set_defaults(func=_explain)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0, 1 or 2)."""
    args = build_parser().parse_args(argv)
    if getattr(args, "dtype", None) is None and args.command == "bench":
        args.dtype = ["float32", "bfloat16"]
    try:
        return args.func(args)
    except CommandError as exc:
        print(f"fastinit {args.command}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"\nfastinit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`fastinit explain ... | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1


if __name__ == "__main__":
    sys.exit(main())
