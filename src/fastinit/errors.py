"""Exceptions raised for bad input.

Each also derives from the exception type ``torch.nn.init`` raises for the same input, so code
written against torch keeps working: ``except RuntimeError`` still catches a reversed
``uniform_`` range, ``except NotImplementedError`` still catches an integer tensor.
"""


class InitValueError(ValueError, RuntimeError):
    """A parameter value an initialiser cannot use (reversed bounds, nan, negative std, ...)."""


class ZeroStdError(InitValueError, ZeroDivisionError):
    """``trunc_normal_`` with ``std == 0`` (torch raises ZeroDivisionError)."""


class UnsupportedDtypeError(TypeError, NotImplementedError):
    """A tensor dtype a random initialiser cannot fill (integer, bool)."""


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here; the original error is chained."""


class UnsupportedLayoutError(TypeError, NotImplementedError):
    """A fastinit-only function called on a layout it does not fill (sparse, nested, mkldnn,
    quantized); the torch.nn.init functions hand such tensors to torch's own."""


class NotATensorError(TypeError, AttributeError):
    """Something other than a torch.Tensor (a numpy array, a list) given as the tensor; torch's
    functions fail on it with AttributeError, so this is one too."""
