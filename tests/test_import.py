"""`import fastinit`: what it imports, and what a bad FASTINIT_BACKEND does. Each case runs in a
fresh interpreter, since both depend on what the process imported before."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def probe(script: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "FASTINIT_BACKEND"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=dict(environ, **env))
    assert proc.returncode == 0, f"status {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


BAD_BACKEND_PROBE = """
import json, warnings, torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastinit
warned = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
t = torch.full((10,), float("nan"))
try:
    fastinit.normal_(t, seed=1)
    first_use = ["no error", ""]
except Exception as exc:
    first_use = [type(exc).__name__, str(exc)]
untouched = bool(t.isnan().all())
fastinit.set_backend("auto")
fastinit.normal_(t, seed=1)
print(json.dumps([warned, first_use, untouched, bool(t.isfinite().all())]))
"""


def test_unknown_fastinit_backend_imports_warns_and_raises_at_first_use():
    warned, first_use, untouched, after_set_backend = json.loads(
        probe(BAD_BACKEND_PROBE, FASTINIT_BACKEND="nonsense").stdout.splitlines()[-1])
    assert len(warned) == 1 and "FASTINIT_BACKEND='nonsense'" in warned[0], warned
    error_type, message = first_use
    assert error_type == "ValueError"
    assert message.startswith("FASTINIT_BACKEND='nonsense': unknown backend 'nonsense'")
    assert untouched, "the failed call wrote its tensor"
    assert after_set_backend, "set_backend() should replace the unusable environment choice"


def test_unavailable_fastinit_backend_raises_its_error_at_first_use():
    # No GPU here: "cuda" cannot run, for a reason the error names.
    script = BAD_BACKEND_PROBE.replace("import fastinit\n", "import fastinit\n"
                                       "from fastinit.backends import cuda\n"
                                       "assert cuda.IMPORT_ERROR is not None\n", 1)
    warned, first_use, untouched, _ = json.loads(
        probe(script, FASTINIT_BACKEND="cuda").stdout.splitlines()[-1])
    assert len(warned) == 1 and "backend 'cuda' cannot run here" in warned[0]
    assert first_use[0] == "BackendUnavailableError"
    assert first_use[1].startswith("FASTINIT_BACKEND='cuda': backend 'cuda' cannot run here")
    assert untouched


def test_a_good_fastinit_backend_is_selected_silently():
    script = """
    import warnings
    warnings.simplefilter("error")
    import fastinit
    print(fastinit.get_backend())
    """
    assert probe(script, FASTINIT_BACKEND="reference").stdout.split() == ["reference"]


def test_import_does_not_import_torch_distributed_tensor():
    script = """
    import json, sys, torch, fastinit
    before = "torch.distributed.tensor" in sys.modules
    fastinit.normal_(torch.empty(100), seed=1)
    fastinit.reset_parameters(torch.nn.Linear(4, 4), seed=0)
    after = "torch.distributed.tensor" in sys.modules
    print(json.dumps([before, after]))
    """
    assert json.loads(probe(script).stdout.splitlines()[-1]) == [False, False]


@pytest.mark.slow
def test_dtensor_is_recognised_once_its_module_is_imported():
    # The negative control of the test above: the lazily bound names still see DTensors.
    script = """
    import os, torch, fastinit
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Replicate
    from torch.distributed.device_mesh import init_device_mesh
    from fastinit.sharding import is_dtensor
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="0", RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo", rank=0, world_size=1)
    mesh = init_device_mesh("cpu", (1,))
    d = DTensor.from_local(torch.empty(8, 4), mesh, [Replicate()])
    fastinit.normal_(d, seed=3)
    expected = torch.empty(8, 4)
    fastinit.normal_(expected, seed=3)
    print(is_dtensor(d), is_dtensor(torch.empty(1)), torch.equal(d.to_local(), expected))
    dist.destroy_process_group()
    """
    assert probe(script).stdout.split() == ["True", "False", "True"]


def test_checkout_root_holds_no_python_package():
    """`python -m pytest`, `python -c` and scripts run from the checkout put its root first on
    sys.path, where a package folder shadows an installed package of that name (a top-level
    kernels/ would stand for Hugging Face's `kernels`, which transformers imports, and break
    `import transformers`): fastinit's packages live under src/ only."""
    packages = sorted(name for name in os.listdir(ROOT)
                      if os.path.isfile(os.path.join(ROOT, name, "__init__.py")))
    assert packages == [], f"package folders at the checkout's root: {packages}"
