"""Exceptions raised for bad input, in one hierarchy under :class:`FastinitError`.

Each also derives from the exception type ``torch.nn.init`` raises for the same input, so code
written against torch keeps working: ``except RuntimeError`` still catches a reversed
``uniform_`` range, ``except NotImplementedError`` still catches an integer tensor.

A call checks its arguments first (torch's exception types and messages), then whether its
tensor can be written safely (:class:`UnsafeTargetError`: storage, alignment, overlap,
inference tensors); nothing is written unless every check passes.
"""


class FastinitError(Exception):
    """The base of every exception fastinit raises for bad input or an unusable setup."""


class InitValueError(FastinitError, ValueError, RuntimeError):
    """A parameter value an initialiser cannot use (reversed bounds, nan, negative std, ...)."""


class ZeroStdError(InitValueError, ZeroDivisionError):
    """``trunc_normal_`` with ``std == 0`` (torch raises ZeroDivisionError)."""


class UnsafeTargetError(InitValueError):
    """A tensor that cannot be written safely: its elements lie outside its storage (freed by
    FSDP, or shrunk), share memory (an expanded view), are misaligned, or it is an inference
    tensor outside inference mode. torch raises RuntimeError for each."""


class UnsupportedDtypeError(FastinitError, TypeError, NotImplementedError):
    """A tensor dtype a random initialiser cannot fill (integer, bool)."""


class BackendUnavailableError(FastinitError, RuntimeError):
    """An explicitly requested backend cannot run here; the original error is chained."""


class UnsupportedLayoutError(FastinitError, TypeError, NotImplementedError):
    """A fastinit-only function called on a layout it does not fill (sparse, nested, mkldnn,
    quantized); the torch.nn.init functions hand such tensors to torch's own."""


class NotATensorError(FastinitError, TypeError, AttributeError):
    """Something other than a torch.Tensor (a numpy array, a list) given as the tensor; torch's
    functions fail on it with AttributeError, so this is one too."""


class GraphCaptureError(FastinitError, RuntimeError):
    """A fill that stages host memory, asked for while the current CUDA stream is captured into
    a graph: a replay would read that memory after it is gone."""


class TorchVersionError(FastinitError, RuntimeError):
    """This torch lacks a private helper fastinit's sharded init uses."""
