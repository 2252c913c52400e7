"""Triton kernels and their launchers (shipped as ``skelfast.kernels``). No autograd, no modules:
``skelfast.ops`` wraps them. Importing this package requires triton."""
