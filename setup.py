"""Builds the C++/CUDA extension ``skelfast._C`` from csrc/.

CPU kernels are always built. CUDA kernels (csrc/**/*.cu) are built only when the installed torch
has CUDA (``torch.version.cuda``) and nvcc is found; a CPU-only torch cannot link them.
Environment: ``SKELFAST_BUILD_CUDA=0|1`` forces the choice, ``DEBUG=1`` builds with -O0 -g.
"""

import glob
import os

import torch
from setuptools import find_packages, setup
from torch.utils import cpp_extension

here = os.path.dirname(os.path.abspath(__file__))
debug = os.environ.get("DEBUG", "0") == "1"
want_cuda = os.environ.get("SKELFAST_BUILD_CUDA")
with_cuda = (
    torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if want_cuda is None
    else want_cuda == "1"
)

cpp_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
cuda_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
# -fno-trapping-math lets GCC vectorise loops with float selects (the GRU gates' clamps); no kernel
# relies on floating-point traps.
cxx_flags = ["-O0", "-g"] if debug else ["-O3", "-g0", "-fopenmp", "-fno-trapping-math"]
defines = [("Py_LIMITED_API", "0x030A0000")]

if with_cuda:
    extension = cpp_extension.CUDAExtension(
        "skelfast._C",
        cpp_sources + cuda_sources,
        define_macros=defines + [("WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--expt-relaxed-constexpr"]},
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )
else:
    extension = cpp_extension.CppExtension(
        "skelfast._C",
        cpp_sources,
        define_macros=defines,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )

setup(
    # kernels/ (Triton only) ships as the subpackage skelfast.kernels; the editable install maps it.
    packages=find_packages(include=["skelfast", "skelfast.*"]) + ["skelfast.kernels"],
    package_dir={"skelfast.kernels": "kernels"},
    package_data={"skelfast.configs": ["*.toml"]},
    ext_modules=[extension],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
