"""The native entry points never crash, the C++ fill is fork-safe, it runs on as many threads as
torch.get_num_threads() gives the calling thread (a small fill on the calling thread alone), and
its values depend neither on the thread count nor on other fills running at the same time.

Each probe runs in a subprocess: a crash (segfault, abort) or a hang shows as a failed test with
the subprocess's exit status and output, never as a dead or stuck test run.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script: str, timeout: float = 120, env=None) -> subprocess.CompletedProcess:
    """Runs `script` in a fresh interpreter; fails the test on a crash, a hang or an error."""
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env=dict(os.environ, **(env or {})))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the probe hung for {timeout} s; output so far: {exc.stdout!r} {exc.stderr!r}")
    assert proc.returncode == 0, (
        f"the probe exited with status {proc.returncode}\nstdout: {proc.stdout}\n"
        f"stderr: {proc.stderr}")
    return proc


def last_json(proc: subprocess.CompletedProcess):
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Bad descriptors reach the raw entry points: a ValueError naming the descriptor and field, and
# nothing written, also to the good descriptor before the bad one.

# Byte offsets of FillDescriptor fields (csrc/fastinit/contract_numbers.h).
FIELD_OFFSETS = {"data": 0, "numel": 8, "first_index": 16, "dist": 40, "dtype": 44, "ndim": 48,
                 "size0": 56, "stride0": 120}

BAD_DESCRIPTORS = {
    # case: (field, value, the error's text)
    "null data": ("data", 0, "descriptor 1: data: null address for 1000 elements"),
    "misaligned data": ("data", "+2", "descriptor 1: data: address {} is not aligned to the 4-byte"),
    "negative numel": ("numel", -3, "descriptor 1: numel: -3 is negative"),
    "numel past the address space": (("numel", "size0"), 2**62,
                                     "descriptor 1: numel: 4611686018427387904 elements over"),
    "numel not its sizes' product": ("numel", 999, "descriptor 1: numel: 999 differs from the "
                                     "product of its sizes, 1000"),
    "ndim zero": ("ndim", 0, "descriptor 1: ndim: 0 is outside [1, 8]"),
    "negative stride": ("stride0", -1, "descriptor 1: dim 0: size 1000, stride -1"),
    "negative first_index": ("first_index", -1, "descriptor 1: first_index: -1 is negative"),
    "unknown dist": ("dist", 9, "descriptor 1: dist: unknown distribution code 9"),
    "negative dist": ("dist", -1, "descriptor 1: dist: unknown distribution code -1"),
    "unknown dtype": ("dtype", 7, "descriptor 1: dtype: unknown dtype code 7"),
}

# Each entry point called with a buffer of packed descriptors (`buffer`); the _cuda ones need no
# GPU to validate (emulate writes host memory: the one that could crash here).
ENTRY_POINTS = {
    "_C.fill": "_C.fill(buffer, 2)",
    "_cuda.emulate": "_cuda.emulate(buffer)",
    "_cuda.build_table": "_cuda.build_table(buffer, 132)",
    "_cuda.launch_by_value": "_cuda.launch_by_value(buffer, 132, 0, 0)",
}

ENTRY_PROBE = """
import json, struct, torch
from fastinit import _C
from fastinit.contract import Distribution
from fastinit.plan import make_fill, pack_descriptors
try:
    from fastinit import _cuda
except ImportError as exc:
    if {call!r}.startswith("_cuda"):
        print(json.dumps({{"skip": f"fastinit._cuda is not built here: {{exc}}"}}))
        raise SystemExit(0)

FIELD_OFFSETS = {offsets!r}
CASES = {cases!r}
FORMATS = {{"data": "<Q", "numel": "<q", "first_index": "<q", "dist": "<i", "dtype": "<i",
            "ndim": "<i", "size0": "<q", "stride0": "<q"}}
results = {{}}
for name, (field, value, _) in CASES.items():
    good = torch.full((1000,), float("nan"))
    bad = torch.full((1000,), float("nan"))
    packed = pack_descriptors([make_fill(good, Distribution.UNIFORM, [1.0, 0.0], 1),
                               make_fill(bad, Distribution.UNIFORM, [1.0, 0.0], 2)])
    buffer = bytearray(packed)
    second = len(buffer) // 2
    if value == "+2":
        value = bad.data_ptr() + 2
    for one in (field if isinstance(field, tuple) else (field,)):
        struct.pack_into(FORMATS[one], buffer, second + FIELD_OFFSETS[one], value)
    try:
        {call}
        outcome = ("no error", "")
    except Exception as exc:
        outcome = (type(exc).__name__, str(exc))
    untouched = bool(good.isnan().all()) and bool(bad.isnan().all())
    results[name] = [*outcome, untouched, value]
buffer = bytearray(10)
try:
    {call}
    results["partial buffer"] = ["no error", "", True, 0]
except Exception as exc:
    results["partial buffer"] = [type(exc).__name__, str(exc), True, 0]
print(json.dumps(results))
"""


@pytest.fixture(scope="module", params=list(ENTRY_POINTS))
def entry_probe(request):
    script = ENTRY_PROBE.format(call=ENTRY_POINTS[request.param], offsets=FIELD_OFFSETS,
                                cases=BAD_DESCRIPTORS)
    results = last_json(run_script(script))
    if "skip" in results:
        pytest.skip(results["skip"])
    return results


@pytest.mark.parametrize("case", list(BAD_DESCRIPTORS))
def test_entry_point_rejects_a_bad_descriptor_before_writing(entry_probe, case):
    error_type, message, untouched, value = entry_probe[case]
    assert error_type == "ValueError", (error_type, message)
    assert BAD_DESCRIPTORS[case][2].format(value) in message
    assert untouched, "a tensor was written although the call raised"


def test_entry_point_rejects_a_partial_descriptor_buffer(entry_probe):
    error_type, message, _, _ = entry_probe["partial buffer"]
    assert error_type == "ValueError" and "is not a whole number of" in message


def test_tensors_without_storage_raise_in_every_backend():
    """A FakeTensor and a freed storage have a null data pointer: the cpu backend (C++) and the
    Triton launcher (interpreted here) raise ValueError instead of writing through it."""
    script = """
    import json, torch, warnings
    from torch._subclasses.fake_tensor import FakeTensorMode
    from fastinit.backends import cpu, triton
    from fastinit.contract import Distribution
    from fastinit.plan import Fill
    warnings.simplefilter("ignore")  # FakeTensor.data_ptr() is deprecated, and warns
    with FakeTensorMode():
        fake = torch.empty(1000, 1000)
    freed = torch.empty(1000)
    freed.untyped_storage().resize_(0)
    results = {}
    for tensor_name, tensor in (("fake", fake), ("freed", freed)):
        for backend in (cpu, triton):
            good = torch.full((10,), float("nan"))
            fills = [Fill(good, Distribution.NORMAL, (0.0, 1.0), 1),
                     Fill(tensor, Distribution.NORMAL, (0.0, 1.0), 1)]
            try:
                backend.run(fills)
                outcome = ["no error", ""]
            except Exception as exc:
                outcome = [type(exc).__name__, str(exc)]
            results[f"{tensor_name} {backend.NAME}"] = outcome + [bool(good.isnan().all())]
    print(json.dumps(results))
    """
    results = last_json(run_script(script, env={"TRITON_INTERPRET": "1"}))
    assert set(results) == {"fake cpu", "fake triton", "freed cpu", "freed triton"}
    for case, (error_type, message, untouched) in results.items():
        assert error_type == "ValueError", (case, error_type, message)
        assert "descriptor 1: data: null address" in message, (case, message)
        assert untouched, f"{case}: the good tensor was written although the call raised"


@pytest.mark.slow
def test_triton_launcher_rejects_misaligned_data_and_unknown_dist():
    script = """
    import json, torch
    from fastinit.backends import triton
    from fastinit.contract import Distribution
    from fastinit.plan import Fill
    memory = bytearray(4 * 1001)
    unaligned = torch.frombuffer(memory, dtype=torch.float32, count=1000, offset=1)
    results = {}
    for name, fill in (("misaligned", Fill(unaligned, Distribution.UNIFORM, (1.0, 0.0), 1)),
                       ("dist", Fill(torch.empty(10), 9, (1.0, 0.0), 1))):
        try:
            triton.run([fill])
            results[name] = ["no error", ""]
        except Exception as exc:
            results[name] = [type(exc).__name__, str(exc)]
    print(json.dumps(results))
    """
    results = last_json(run_script(script, env={"TRITON_INTERPRET": "1"}))
    assert results["misaligned"][0] == "ValueError"
    assert "descriptor 0: data: address" in results["misaligned"][1]
    assert "is not aligned to the 4-byte elements" in results["misaligned"][1]
    assert results["dist"] == ["ValueError", "descriptor 0: dist: unknown distribution code 9"]


# ---------------------------------------------------------------------------------------------
# Fork: a child forked after the parent's fill ran on its thread pool, or after torch's OpenMP
# team ran, or while another thread of the parent was filling.

FORK_PROBE = """
import faulthandler, hashlib, json, multiprocessing, time, torch, fastinit
from fastinit.contract import Distribution, normal_params
from fastinit.plan import make_fill, pack_descriptors

def digest(t):
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()

def threads_of_a_fill():
    # _C.fill asked for 2 threads returns how many ran it (the target must outlive the call).
    from fastinit import _C
    target = torch.empty(1 << 20)
    return _C.fill(pack_descriptors([make_fill(target, Distribution.NORMAL,
                                               normal_params(0, 1), 5)]), 2)

def values():
    t = torch.empty(1 << 20)
    fastinit.normal_(t, 0.0, 1.0, seed=5)
    return t

def child(queue):
    faulthandler.dump_traceback_later(60, exit=True)  # a hung child ends, showing where
    start = time.monotonic()
    t = values()
    team = threads_of_a_fill()
    queue.put((digest(t), team, time.monotonic() - start))

torch.set_num_threads(2)
torch_parallel = float((torch.randn(1 << 22) * 2 + 1).sum())  # torch's own OpenMP team
parent_team = threads_of_a_fill()
context = multiprocessing.get_context("fork")
queue = context.Queue()
process = context.Process(target=child, args=(queue,))
process.start()
child_digest, child_team, seconds = queue.get(timeout=30)
process.join(60)
expected = digest(values())
print(json.dumps([parent_team, expected == child_digest, child_team, seconds, process.exitcode]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("parent_fills", [True, False], ids=["after_a_fill", "after_torch_ops"])
def test_fork_child_after_parallel_regions_completes_with_the_same_values(parent_fills):
    """The parent ran torch's OpenMP team, and fastinit's pool or not (the fork handler is in
    place from `import fastinit`): the child's fills finish, on a pool of its own, with the
    parent's values."""
    script = FORK_PROBE if parent_fills else FORK_PROBE.replace(
        "parent_team = threads_of_a_fill()", "parent_team = 2")
    parent_team, same, child_team, seconds, exitcode = last_json(run_script(script, 120))
    assert parent_team == 2, "the parent's fill did not start its pool: nothing tested"
    assert same, "the forked child's values differ from the parent's"
    assert child_team == 2, "the forked child should fill on two threads of its own"
    assert exitcode == 0
    assert seconds < 30


@pytest.mark.slow
def test_fork_child_before_any_parallel_region_keeps_its_threads():
    script = """
    import faulthandler, json, multiprocessing, torch
    from fastinit import _C
    from fastinit.contract import Distribution, normal_params
    from fastinit.plan import make_fill, pack_descriptors
    def team():
        target = torch.empty(1 << 20)
        return _C.fill(pack_descriptors([make_fill(target, Distribution.NORMAL,
                                                   normal_params(0, 1), 5)]), 2)
    def child(queue):
        faulthandler.dump_traceback_later(60, exit=True)  # a hung child ends, showing where
        queue.put(team())
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    print(json.dumps([queue.get(timeout=60)]))
    process.join(60)
    """
    assert last_json(run_script(script, 180)) == [2]


def test_fork_while_another_thread_fills_completes_in_the_child():
    """Forks taken while a parent thread keeps the pool busy (its lock and its threads may be
    held at the fork): every child fills, on threads of its own, with the parent's values."""
    script = """
    import faulthandler, hashlib, json, multiprocessing, os, threading, torch
    from fastinit import _C
    from fastinit.contract import Distribution, normal_params
    from fastinit.plan import make_fill, pack_descriptors

    def filled(numel, threads):
        t = torch.empty(numel)
        team = _C.fill(pack_descriptors([make_fill(t, Distribution.NORMAL,
                                                   normal_params(0, 1), 9)]), threads)
        return hashlib.sha256(t.numpy().tobytes()).hexdigest(), team

    def child(queue):
        faulthandler.dump_traceback_later(60, exit=True)  # a hung child ends, showing where
        queue.put(filled(1 << 21, 2))

    expected = filled(1 << 21, 1)[0]
    stop = threading.Event()
    def keep_filling():
        while not stop.is_set():
            filled(1 << 21, 2)
    filler = threading.Thread(target=keep_filling)
    filler.start()
    context = multiprocessing.get_context("fork")
    results = []
    for _ in range(6):
        queue = context.Queue()
        process = context.Process(target=child, args=(queue,))
        process.start()
        digest, team = queue.get(timeout=60)
        process.join(60)
        results.append([digest == expected, team, process.exitcode])
    stop.set()
    filler.join()
    print(json.dumps(results))
    """
    assert last_json(run_script(script, 300)) == [[True, 2, 0]] * 6


# ---------------------------------------------------------------------------------------------
# Threads: the count of the calling thread, torch.get_num_threads().

THREADS_PROBE = """
import json, threading, torch, fastinit
from fastinit.backends import cpu

teams = []

class Recording:
    # Forwards to fastinit._C and records how many threads each fill ran on.
    def __init__(self, module):
        self.module = module
    def __getattr__(self, name):
        return getattr(self.module, name)
    def fill(self, descriptors, num_threads):
        teams.append(self.module.fill(descriptors, num_threads))
        return teams[-1]
    def fill_tensors(self, tensors, num_threads):
        teams.append(self.module.fill_tensors(tensors, num_threads))
        return teams[-1]
    def fill_tensor(self, *args):
        teams.append(self.module.fill_tensor(*args))
        return teams[-1]

cpu._C = Recording(cpu._C)
# The raw-metadata call, which returns its thread count (fastinit._C_tensor's fill_tensor reads
# at::get_num_threads() on the calling thread, the function torch.get_num_threads() returns).
fastinit.backends._tensor_fill = None

def fill():
    fastinit.uniform_(torch.empty(1 << 20), seed=1)
    return teams[-1]

def in_thread(setup=None):
    out = []
    def work():
        if setup is not None:
            setup()
        out.append(fill())
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    return out[0]

results = {}
torch.set_num_threads(2)
results["main, 2"] = fill()
results["worker, main set 2"] = in_thread()
results["worker sets 1"] = in_thread(lambda: torch.set_num_threads(1))
torch.set_num_threads(1)
results["main, 1"] = fill()
results["worker, main set 1"] = in_thread()
print(json.dumps(results))
"""


def test_small_fill_runs_on_the_calling_thread_and_large_one_on_the_pool():
    """A fill below the size where threads pay runs on its caller even when threads are offered;
    a large one is offered to as many threads as asked, never more than it has chunks."""
    script = """
    import json, torch
    from fastinit import _C
    from fastinit.contract import Distribution, uniform_params
    from fastinit.plan import make_fill, pack_descriptors
    def team(numel, threads):
        t = torch.empty(numel)
        return _C.fill(pack_descriptors([make_fill(t, Distribution.UNIFORM,
                                                   uniform_params(0, 1), 3)]), threads)
    print(json.dumps([team(1024, 2), team(1 << 16, 2), team(1 << 17, 4), team(1 << 22, 2),
                      team(1 << 22, 3), team(1 << 22, 1), team(1 << 18, 8)]))
    """
    assert last_json(run_script(script)) == [1, 1, 1, 2, 3, 1, 4]


def test_values_do_not_depend_on_thread_count_or_on_fills_running_alongside():
    """Mixed tensors (contiguous, channels_last, a transposed bf16, small ones) in one call give
    the same bytes on 1, 2, 3 and 8 threads, and while two other Python threads fill at the same
    time (one of them then runs without the pool); a uniform fill on the pool equals the
    pure-Python reference."""
    script = """
    import hashlib, json, threading, torch
    from fastinit import _C
    from fastinit.backends import reference
    from fastinit.contract import Distribution, normal_params, uniform_params
    from fastinit.plan import make_fill, pack_descriptors

    def tensors():
        return [torch.empty(3_000_017), torch.empty(8, 64, 56, 56).to(
                    memory_format=torch.channels_last),
                torch.empty(1536, 1024, dtype=torch.bfloat16).t(), torch.empty(1000),
                torch.empty(77)]
    def fills(ts, seed):
        return [make_fill(t, Distribution.NORMAL if i % 2 else Distribution.UNIFORM,
                          normal_params(0, 1) if i % 2 else uniform_params(-1, 1, t.dtype),
                          seed, stream=i) for i, t in enumerate(ts)]
    def digest(ts):
        return hashlib.sha256(b"".join(t.contiguous().view(torch.uint8).numpy().tobytes()
                                       for t in ts)).hexdigest()
    def filled(threads, seed=1):
        ts = tensors()
        _C.fill(pack_descriptors(fills(ts, seed)), threads)
        return digest(ts)

    # uniform is bitwise equal to the reference (normal within the contract's tolerance).
    ref, ours = torch.empty(3_000_017), torch.empty(3_000_017)
    reference.run([make_fill(ref, Distribution.UNIFORM, uniform_params(-1, 1), 1)])
    _C.fill(pack_descriptors([make_fill(ours, Distribution.UNIFORM, uniform_params(-1, 1), 1)]),
            2)
    results = {"reference": torch.equal(ref, ours)}
    results["by threads"] = [filled(t) for t in (1, 2, 3, 8)]
    expected = {seed: filled(1, seed) for seed in (1, 2)}
    seen = []
    def worker(seed):
        for _ in range(6):
            seen.append(filled(2, seed) == expected[seed])
    workers = [threading.Thread(target=worker, args=(seed,)) for seed in (1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    results["alongside"] = seen
    print(json.dumps(results))
    """
    results = last_json(run_script(script, 300))
    assert results["reference"]
    assert len(set(results["by threads"])) == 1, results["by threads"]
    assert results["alongside"] == [True] * 12


def test_fill_uses_the_calling_threads_torch_thread_count():
    results = last_json(run_script(THREADS_PROBE))
    assert results == {"main, 2": 2, "worker, main set 2": 2, "worker sets 1": 1, "main, 1": 1,
                       "worker, main set 1": 1}
