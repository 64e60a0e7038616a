"""Fans and gains: torch.nn.init's rules, plus gains for any activation."""
from __future__ import annotations

import math
from typing import Callable, Union

import numpy as np
import torch

LINEAR_NAMES = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)
FAN_MODES = ("fan_in", "fan_out")


def _calculate_fan_in_and_fan_out(tensor: torch.Tensor) -> tuple[int, int]:
    """torch's fans: dim 1 is the input, dim 0 the output, the rest the receptive field."""
    if tensor.dim() < 2:
        raise ValueError(
            "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions"
        )
    receptive_field_size = 1
    for s in tensor.shape[2:]:
        receptive_field_size *= s
    return tensor.size(1) * receptive_field_size, tensor.size(0) * receptive_field_size


def _calculate_correct_fan(tensor: torch.Tensor, mode: str) -> int:
    mode = mode.lower()
    if mode not in FAN_MODES:
        raise ValueError(f"Mode {mode} not supported, please use one of {list(FAN_MODES)}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _slope(param, default: float) -> float:
    if param is None:
        return default
    if (not isinstance(param, bool) and isinstance(param, int)) or isinstance(param, float):
        return param
    raise ValueError(f"negative_slope {param} not a valid number")


def _panel_nodes() -> tuple[np.ndarray, np.ndarray]:
    """Quadrature for E[g(z)] with z ~ N(0, 1): 20-point Gauss-Legendre on 96 panels of width
    0.25 over [-12, 12] (the mass beyond is < 4e-33). Panel edges fall on multiples of 0.25, so a
    kink at 0 (relu, leaky_relu, prelu, elu) is integrated to rounding error."""
    x, w = np.polynomial.legendre.leggauss(20)
    edges = np.linspace(-12.0, 12.0, 97)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[:-1] + edges[1:])
    nodes = (mid[:, None] + half[:, None] * x[None, :]).ravel()
    weights = (half[:, None] * w[None, :]).ravel() * np.exp(-0.5 * nodes**2) / math.sqrt(2 * math.pi)
    return nodes, weights


_NODES, _WEIGHTS = _panel_nodes()


def _apply(fn: Callable, z: np.ndarray) -> np.ndarray:
    try:
        out = fn(torch.from_numpy(z))
        return np.asarray(out.detach().double().numpy() if isinstance(out, torch.Tensor) else out,
                          dtype=np.float64)
    except (TypeError, AttributeError, RuntimeError):
        return np.array([float(fn(float(v))) for v in z], dtype=np.float64)


def gain_of(fn: Callable) -> float:
    """1 / sqrt(E[f(z)^2]) for z ~ N(0, 1): the gain that keeps unit second moment through f."""
    second_moment = float(np.dot(_WEIGHTS, _apply(fn, _NODES.copy()) ** 2))
    if not math.isfinite(second_moment) or second_moment <= 0:
        raise ValueError(f"cannot compute a gain for {fn!r}: E[f(z)^2] = {second_moment}")
    return 1.0 / math.sqrt(second_moment)


def _named_activation(nonlinearity: str, param) -> Callable | None:
    F = torch.nn.functional
    if nonlinearity == "gelu":
        approximate = param if isinstance(param, str) else "none"
        return lambda z: F.gelu(z, approximate=approximate)
    if nonlinearity in ("silu", "swish"):
        return F.silu
    if nonlinearity == "elu":
        alpha = 1.0 if param is None else float(param)
        return lambda z: F.elu(z, alpha=alpha)
    if nonlinearity == "mish":
        return F.mish
    if nonlinearity == "softplus":
        beta = 1.0 if param is None else float(param)
        return lambda z: F.softplus(z, beta=beta)
    return None


def calculate_gain(nonlinearity: Union[str, Callable], param: int | float | None = None) -> float:
    r"""Return the recommended gain value for the given nonlinearity function.

    torch's names give torch's values: linear / conv / conv_transpose / sigmoid: 1,
    tanh: 5/3, relu: :math:`\sqrt{2}`, leaky_relu: :math:`\sqrt{2 / (1 + \text{slope}^2)}`
    (slope = ``param``, default 0.01), selu: 3/4.

    Beyond torch: "prelu" (slope = ``param``, default 0.25, same formula as leaky_relu), and
    "gelu", "silu", "elu" (alpha = ``param``), "mish", "softplus" (beta = ``param``) or any
    callable ``f``: gain = :math:`1 / \sqrt{E[f(z)^2]}`, z ~ N(0, 1), by quadrature. For linear,
    relu and leaky_relu that formula gives torch's values.

    Args:
        nonlinearity: the non-linear function: an `nn.functional` name or any callable of a
            float64 NumPy array
        param: optional parameter for the non-linear function (slope, alpha or beta)

    Returns:
        The gain, a float.

    Raises:
        ValueError: an unknown name, a slope that is not a number, or a callable whose
            :math:`E[f(z)^2]` is zero or not finite.

    Examples:
        >>> fastinit.calculate_gain("leaky_relu", 0.2)
        1.3867504905630728
        >>> round(fastinit.calculate_gain(torch.nn.functional.silu), 4)
        1.6765
    """
    if callable(nonlinearity):
        return gain_of(nonlinearity)
    if nonlinearity in LINEAR_NAMES or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1 + _slope(param, 0.01) ** 2))
    if nonlinearity == "prelu":
        return math.sqrt(2.0 / (1 + _slope(param, 0.25) ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4  # torch's empirical value (pytorch/pytorch#50664)
    fn = _named_activation(nonlinearity, param) if isinstance(nonlinearity, str) else None
    if fn is None:
        raise ValueError(f"Unsupported nonlinearity {nonlinearity}")
    return gain_of(fn)
