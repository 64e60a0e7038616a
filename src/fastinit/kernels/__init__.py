"""fastinit's Triton kernels (installed as ``fastinit.kernels``); ``fill`` is the fused fill."""
