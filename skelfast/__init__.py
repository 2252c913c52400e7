"""skelfast: fused kernels and a thin PyTorch API for self-supervised skeleton action recognition.

Importing skelfast never fails because an optional backend (the compiled extension, Triton, CUDA)
is missing; ``python -m skelfast info`` says what is available and why not.
"""

from skelfast import _extension

__version__ = "0.1.0"

_extension.load_error()  # load skelfast._C (registers torch.ops.skelfast.*) if it was built

from skelfast import backends, nn, ops, reference  # noqa: E402
from skelfast.backends import BackendUnavailableError, use_backend  # noqa: E402

__all__ = ["BackendUnavailableError", "backends", "nn", "ops", "reference", "use_backend", "__version__"]
