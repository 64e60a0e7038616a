"""fastinit: torch.nn.init-compatible weight initialisation at memory speed, with one
random-number contract for every backend (same seed, same weights on CPU and GPU).
"""
from .backends import backend_info, get_backend, set_backend
from .contract import stream_for_name
from .errors import BackendUnavailableError, InitValueError, UnsupportedDtypeError, ZeroStdError
from . import spec
from .fused import fused
from .gains import calculate_gain
from .model import InitResult, explain, init_module, materialize, reset_parameters
from .nn_init import (
    constant,
    constant_,
    dirac,
    dirac_,
    eye,
    eye_,
    kaiming_normal,
    kaiming_normal_,
    kaiming_uniform,
    kaiming_uniform_,
    lecun_normal_,
    lecun_uniform_,
    normal,
    normal_,
    ones_,
    orthogonal,
    orthogonal_,
    sparse,
    sparse_,
    trunc_normal_,
    uniform,
    uniform_,
    variance_scaling_,
    xavier_normal,
    xavier_normal_,
    xavier_uniform,
    xavier_uniform_,
    zeros_,
)

__version__ = "0.1.0"

__all__ = [
    "calculate_gain",
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
    "lecun_uniform_",
    "lecun_normal_",
    "variance_scaling_",
    "uniform",
    "normal",
    "constant",
    "eye",
    "dirac",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "sparse",
    "spec",
    "reset_parameters",
    "init_module",
    "materialize",
    "explain",
    "fused",
    "InitResult",
    "set_backend",
    "get_backend",
    "backend_info",
    "stream_for_name",
    "InitValueError",
    "UnsupportedDtypeError",
    "ZeroStdError",
    "BackendUnavailableError",
]
