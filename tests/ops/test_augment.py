"""skelfast.ops.augment: the CPU paths (C++ kernel and vectorised torch) and the Triton kernel (interpreted) against the
step-by-step reference, one step at a time and all together, on odd shapes and ragged lengths."""

from __future__ import annotations

import json
import math

import pytest
import torch

import skelfast
from skelfast import backends
from skelfast.augment import AugmentParams
from skelfast.ops.augment import _backend, augment_cpp, augment_torch
from skelfast.reference import philox
from skelfast.reference.augment import augment as reference
from skelfast.reference.augment import bone_parents
from tests.utils import assert_close, run_per_isa

# float32 paths that sum the same terms in another order: a few ulps of values up to ~5 (the
# unnormalised blur's gain) times the matrices' entries
ATOL, RTOL = 2e-5, 1e-5

cpp_missing = backends.cpp_reason(torch.device("cpu"), torch.float32, (torch.float32,))
if cpp_missing is None and not hasattr(torch.ops.skelfast, "augment_cpu"):
    cpp_missing = "skelfast._C was built without augment_cpu"
requires_cpp = pytest.mark.skipif(cpp_missing is not None, reason=str(cpp_missing))
CPU_PATHS = {"torch": augment_torch, "cpp": augment_cpp}
CPU_BACKENDS = ["torch", pytest.param("cpp", marks=requires_cpp)]


def _data(n: int, t_in: int, v: int, m: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, t_in, v, m, generator=g)
    valid = torch.randint(1, t_in + 1, (n,), generator=g)
    valid[0] = t_in
    return x, valid


def _step_params(step: str, valid: torch.Tensor, v: int, t_out: int) -> AugmentParams:
    """Identity parameters with one step switched on (``all``: every step at once)."""
    n = int(valid.shape[0])
    g = torch.Generator().manual_seed(1)
    p = AugmentParams.identity(valid, v, t_out)
    steps = {step} if step != "all" else {"crop", "matrix", "select", "flip", "noise", "blur", "axis", "mask"}
    if "crop" in steps:  # a window inside the valid frames, resized
        length = torch.clamp((valid * 0.6).long(), min=1)
        start = (torch.rand(n, generator=g) * (valid - length + 1)).long()
        p = p.replace(start=start, length=length)
    if step == "shift":  # HiCLR's reflected shift: windows reaching past both ends
        p = p.replace(start=torch.randint(-3, 4, (n,), generator=g), length=torch.full((n,), t_out))
    if step == "reverse":
        p = p.replace(reverse=torch.arange(n) % 2 == 0)
    if "matrix" in steps:
        p = p.replace(matrix=torch.randn(n, 3, 3, generator=g))
    if "select" in steps:
        p = p.replace(
            joint_matrix=torch.randn(n, 3, 3, generator=g), joint_select=torch.rand(n, v, generator=g) < 0.5
        )
    if "flip" in steps:
        perm = torch.stack([torch.randperm(v, generator=g) for _ in range(n)])
        p = p.replace(joint_source=torch.where((torch.arange(n) % 2 == 0)[:, None], perm, p.joint_source))
    if "noise" in steps:
        p = p.replace(
            noise_std=torch.tensor([0.5, 0.0, 0.1])[torch.arange(n) % 3], noise_seed=torch.tensor(7)
        )
    if "blur" in steps or step == "blur-normalized":
        p = p.replace(
            blur_on=torch.arange(n) % 2 == 0,
            blur_sigma=0.1 + 1.9 * torch.rand(n, generator=g),
            blur_normalized=step == "blur-normalized",
        )
    if "axis" in steps:
        keep = torch.ones(n, 3)
        keep[torch.arange(n), torch.arange(n) % 3] = 0.0
        p = p.replace(axis_keep=keep)
    if "mask" in steps:
        p = p.replace(frame_joint_mask=torch.rand(t_out, v, generator=g) < 0.2)
    return p


STEPS = [
    "none", "crop", "shift", "reverse", "matrix", "select", "flip", "noise", "blur", "blur-normalized",
    "axis", "mask", "all",
]  # fmt: skip
SHAPES = [(3, 1, 25, 2, 4), (2, 7, 17, 1, 5), (3, 50, 25, 2, 16), (2, 300, 25, 1, 64)]  # n, T_in, V, M, t_out


def _parents(v: int) -> torch.Tensor:
    return bone_parents(v) if v == 25 else torch.tensor([0] + [j - 1 for j in range(1, v)])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("stream", ["joint", "bone", "motion"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cpu_path_matches_reference(backend, step, shape, stream):
    """Noise included: every path draws the same stream (log/sin/cos a few ulps apart)."""
    n, t_in, v, m, t_out = shape
    x, valid = _data(n, t_in, v, m)
    p = _step_params(step, valid, v, t_out).replace(stream=stream)
    fill = torch.tensor(0.25)
    expected = reference(x, valid, p, fill, _parents(v))
    actual = CPU_PATHS[backend](x, valid, p, fill, _parents(v))
    assert_close(actual, expected, ATOL, RTOL, f"{backend} {step} {shape} {stream}")


TRITON_CASES = [(s, (2, 9, 25, 2, 8), "joint") for s in STEPS] + [
    ("all", (1, 7, 17, 1, 5), "bone"),
    ("all", (2, 50, 25, 2, 16), "motion"),
    ("crop", (2, 300, 25, 2, 8), "bone"),
]


@pytest.mark.parametrize(("step", "shape", "stream"), TRITON_CASES, ids=str)
def test_triton_matches_reference(step, shape, stream):
    from skelfast.kernels.augment import augment_triton

    n, t_in, v, m, t_out = shape
    x, valid = _data(n, t_in, v, m)
    p = _step_params(step, valid, v, t_out).replace(stream=stream)
    fill = torch.tensor(-0.5)
    expected = reference(x, valid, p, fill, _parents(v))
    assert_close(augment_triton(x, valid, p, fill, _parents(v)), expected, ATOL, RTOL, f"{step} {stream}")


def test_triton_noise_is_the_shared_stream_and_blurred_exactly():
    """Noise alone and under the blur (HiCLR's order: noise, then blur): the kernel regenerates
    each tap's noise from its counter, so it equals the reference's blurred stream; replays for a
    seed, changes with the seed."""
    from skelfast.kernels.augment import augment_triton

    n, t, v, m = 3, 16, 25, 2
    x, valid = _data(n, t, v, m)
    valid[:] = t
    parents = _parents(v)
    noisy = AugmentParams.identity(valid, v, t).replace(
        noise_std=torch.tensor([0.5, 0.0, 2.0]), noise_seed=torch.tensor(2**40 + 123)
    )
    blurred = noisy.replace(blur_on=torch.ones(n, dtype=torch.bool), blur_sigma=torch.tensor([1.0, 0.5, 2.0]))
    for p in (noisy, blurred):
        out = augment_triton(x, valid, p, torch.tensor(0.0), parents)
        # values up to ~4 sigma * std 2 * blur gain ~2.5: a few ulps of 20
        assert_close(out, reference(x, valid, p), 2e-5, 1e-5, "triton noise")
        assert torch.equal(out, augment_triton(x, valid, p, torch.tensor(0.0), parents))
    other = augment_triton(x, valid, noisy.replace(noise_seed=torch.tensor(124)), torch.tensor(0.0), parents)
    assert not torch.allclose(other, augment_triton(x, valid, noisy, torch.tensor(0.0), parents))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cpu_noise_matches_reference_and_replays(backend):
    x, valid = _data(3, 20, 25, 2)
    p = _step_params("all", valid, 25, 12)
    with skelfast.use_backend(f"augment={backend}"):
        a = skelfast.ops.augment(x, valid, p)
        assert torch.equal(a, skelfast.ops.augment(x, valid, p))
        b = skelfast.ops.augment(x, valid, p.replace(noise_seed=torch.tensor(8)))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cpu_blur_with_small_sigma_matches_reference(backend, dtype):
    """sigma 0.1-0.5: the outer taps underflow to exactly 0 (the C++ kernel skips them), and at 0.3
    and 0.5 two float32 taps are denormal (the C++ stencil reads them as 0: a difference below
    1.2e-38)."""
    x, valid = _data(3, 20, 25, 2)
    x = x.to(dtype)
    p = AugmentParams.identity(valid, 25, 16).replace(
        blur_on=torch.ones(3, dtype=torch.bool), blur_sigma=torch.tensor([0.1, 0.3, 0.5])
    )
    taps = p.blur_weights(dtype)
    assert bool((taps == 0).any())
    if dtype == torch.float32:
        tiny = torch.finfo(torch.float32).tiny
        assert int(((taps != 0) & (taps.abs() < tiny)).sum()) == 4
    expected = reference(x, valid, p)
    tol = ATOL if dtype == torch.float32 else 1e-12
    actual = CPU_PATHS[backend](x, valid, p, torch.tensor(0.0), torch.arange(25))
    assert_close(actual, expected, tol, tol, f"{backend} {dtype}")


@requires_cpp
def test_cpp_blur_forms_give_the_same_bits(tmp_path):
    """The C++ blur is built for AVX-512, AVX2 and the baseline (picked at run time, capped by
    SKELFAST_CPU_ISA, read once per process): each runs in a child process on the same input, with
    blocks of four vectors, single vectors and a scalar tail ((3 T + 2 R) V M = 49 * 50 values), and
    float32 and float64 (other lane counts). None contracts to FMA, so all give the same bits; each
    also meets the reference."""
    script = (
        "import sys, torch\n"
        "from skelfast.augment import AugmentParams\n"
        "from skelfast.ops.augment import augment_cpp\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = torch.randn(3, 3, 20, 25, 2, generator=g)\n"
        "valid = torch.tensor([20, 17, 9])\n"
        "p = AugmentParams.identity(valid, 25, 11).replace(\n"
        "    blur_on=torch.tensor([True, False, True]), blur_sigma=torch.tensor([1.7, 1.0, 0.6]))\n"
        "outs = [augment_cpp(x.to(d), valid, p, torch.tensor(0.0), torch.arange(25))\n"
        "        for d in (torch.float32, torch.float64)]\n"
        "torch.save(outs, sys.argv[1])\n"
    )
    results = run_per_isa(script, tmp_path)
    x, valid = (
        torch.randn(3, 3, 20, 25, 2, generator=torch.Generator().manual_seed(0)),
        torch.tensor([20, 17, 9]),
    )
    p = AugmentParams.identity(valid, 25, 11).replace(
        blur_on=torch.tensor([True, False, True]), blur_sigma=torch.tensor([1.7, 1.0, 0.6])
    )
    for i, dtype in enumerate((torch.float32, torch.float64)):
        expected = reference(x.to(dtype), valid, p)
        tol = ATOL if dtype == torch.float32 else 1e-12
        assert_close(results["avx512"][i], expected, tol, tol, f"avx512 {dtype}")
        for isa in ("baseline", "avx2"):
            assert torch.equal(results[isa][i], results["avx512"][i]), (isa, dtype)


@requires_cpp
def test_cpp_forms_give_the_same_bits(tmp_path):
    """The whole C++ op in each instruction-set form (child processes, SKELFAST_CPU_ISA): on AVX-512
    float32 rows of at most 64 values (V M = 50 and 17) go through the register frame pass
    (frames_avx512: interpolation, joint map by permutes, per-joint matrices, noise, axis and joint
    mask), wider rows (V M = 75) and float64 through the generic loops, which the other forms run for
    everything. No form contracts to FMA, so all give the same bits; each also meets the reference."""
    cases = []
    for shape, stream in [
        ((3, 50, 25, 2, 16), "joint"),
        ((3, 50, 25, 2, 16), "bone"),
        ((3, 50, 25, 2, 16), "motion"),
        ((2, 7, 17, 1, 5), "joint"),
        ((2, 9, 25, 3, 6), "joint"),
    ]:
        n, t_in, v, m, t_out = shape
        x, valid = _data(n, t_in, v, m)
        for dtype in (torch.float32, torch.float64):
            cases.append(
                (x.to(dtype), valid, _step_params("all", valid, v, t_out).replace(stream=stream), _parents(v))
            )
    inputs = tmp_path / "inputs.pt"
    torch.save(cases, inputs)
    script = (
        "import sys, torch\n"
        "from skelfast.ops.augment import augment_cpp\n"
        "cases = torch.load(sys.argv[1].replace('.pt', '_inputs.pt'), weights_only=False)\n"
        "torch.save([augment_cpp(x, valid, p, torch.tensor(0.25), parents) for x, valid, p, parents in cases],"
        " sys.argv[1])\n"
    )
    for isa in ("baseline", "avx2", "avx512"):
        (tmp_path / f"{isa}_inputs.pt").write_bytes(inputs.read_bytes())
    results = run_per_isa(script, tmp_path)
    for i, (x, valid, p, parents) in enumerate(cases):
        what = f"case {i}: {tuple(x.shape)} {x.dtype} {p.stream}"
        expected = reference(x, valid, p, torch.tensor(0.25), parents)
        # the float32 tolerance for float64 too: the noise is float32 normals, a few ulps from torch's
        assert_close(results["avx512"][i], expected, ATOL, RTOL, what)
        for isa in ("baseline", "avx2"):
            assert torch.equal(results[isa][i], results["avx512"][i]), f"{isa} {what}"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cpu_noise_is_the_reference_stream(backend):
    """Noise alone (no interpolation, identity matrix): (out - x) / std is the reference stream for
    key seed + n, to a few float32 ulps (the kernels' Cephes log/sin/cos against torch's: 7e-7 at
    most over 960k normals). 3*T*V*M = 1950 is not a multiple of 32: the C++ kernel's AVX2 loop
    and its scalar tail both run."""
    x, valid = _data(4, 13, 25, 2)
    valid[:] = 13
    p = AugmentParams.identity(valid, 25, 13).replace(
        noise_std=torch.tensor([0.5, 0.0, 0.1, 0.2]), noise_seed=torch.tensor(2**62 - 5)
    )
    out = CPU_PATHS[backend](x, valid, p, torch.tensor(0.0), torch.arange(25))
    assert torch.equal(out[1], x[1])  # std 0: untouched
    keys = int(p.noise_seed) + torch.tensor([0, 2, 3])
    expected = philox.normal(keys.view(3, 1), torch.arange(3 * 13 * 50)).view(3, 3, 13, 25, 2)
    z = (out[[0, 2, 3]] - x[[0, 2, 3]]) / p.noise_std[[0, 2, 3]].view(3, 1, 1, 1, 1)
    # z is recovered through x + std * z - x: float32 rounding of |x| ~ 3 divided by std 0.1
    assert_close(z, expected, 5e-6 / 0.1, 1e-5, backend)


def test_public_op_backends_and_dtypes():
    x, valid = _data(2, 9, 25, 2)
    p = _step_params("all", valid, 25, 8).replace(noise_std=torch.zeros(2))
    expected = reference(x, valid, p)
    for backend in ("reference", "triton", "torch") + (("cpp",) if cpp_missing is None else ()):
        with skelfast.use_backend(f"augment={backend}"):
            assert_close(skelfast.ops.augment(x, valid, p), expected, ATOL, RTOL, backend)
    # automatic choice on the CPU: the C++ kernel for float32/float64, torch for float16
    assert _backend(x) == ("cpp" if cpp_missing is None else "torch")
    assert _backend(x.half()) == "torch"
    out = skelfast.ops.augment(x.double(), valid, p)
    assert out.dtype == torch.float64
    assert_close(out, reference(x.double(), valid, p), 1e-12, 1e-12, "float64")
    half = skelfast.ops.augment(x.half(), valid, p)
    assert half.dtype == torch.float16
    assert_close(half.float(), expected, 2e-2, 1e-2, "float16")


def test_non_contiguous_input_and_empty_batch():
    x, valid = _data(2, 9, 25, 2)
    xt = x.permute(0, 1, 2, 4, 3).contiguous().permute(0, 1, 2, 4, 3)  # same values, other strides
    assert not xt.is_contiguous()
    p = _step_params("all", valid, 25, 8).replace(noise_std=torch.zeros(2))
    from skelfast.kernels.augment import augment_triton

    expected = reference(x, valid, p, None, bone_parents(25))
    assert_close(
        augment_torch(xt, valid, p, torch.tensor(0.0), bone_parents(25)), expected, ATOL, RTOL, "torch"
    )
    if cpp_missing is None:  # permuted (V, M) strides, and every other frame of a longer clip
        out = augment_cpp(xt, valid, p, torch.tensor(0.0), bone_parents(25))
        assert_close(out, expected, ATOL, RTOL, "cpp")
        assert out.is_contiguous()
        long = torch.stack([x, -x], dim=3).flatten(2, 3)  # (N, 3, 18, 25, 2), x on even frames
        assert not long[:, :, ::2].is_contiguous()
        assert_close(
            augment_cpp(long[:, :, ::2], valid, p, torch.tensor(0.0), bone_parents(25)),
            expected,
            ATOL,
            RTOL,
            "cpp strided T",
        )
    assert_close(
        augment_triton(xt, valid, p, torch.tensor(0.0), bone_parents(25)), expected, ATOL, RTOL, "tri"
    )
    empty = AugmentParams.identity(torch.zeros(0, dtype=torch.long), 25, 8)
    for backend in ("torch", "reference") + (("cpp",) if cpp_missing is None else ()):
        with skelfast.use_backend(f"augment={backend}"):
            out = skelfast.ops.augment(torch.zeros(0, 3, 9, 25, 2), torch.zeros(0, dtype=torch.long), empty)
        assert out.shape == (0, 3, 8, 25, 2), backend


def test_gradient_flows_into_fill_only():
    x, valid = _data(2, 9, 25, 2)
    p = _step_params("mask", valid, 25, 8)
    fill = torch.tensor(0.3, requires_grad=True)
    out = skelfast.ops.augment(x, valid, p, fill)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    mask = p.frame_joint_mask[None, None, :, :, None].expand_as(out)
    assert_close(fill.grad, weights[mask].sum(), 1e-5, 1e-5, "d fill")
    assert bool((out[mask] == 0.3).all())
    with pytest.raises(ValueError, match="x requires grad"):
        skelfast.ops.augment(x.requires_grad_(), valid, p, fill)


def test_opcheck_and_compile():
    x, valid = _data(2, 9, 25, 2)
    p = _step_params("all", valid, 25, 8)
    fill = torch.tensor(0.3, requires_grad=True)
    args = (x, valid, p.start, p.length, p.reverse, p.matrix, p.joint_matrix, p.joint_select)
    args += (p.joint_source, p.noise_std, p.noise_seed, p.blur_sigma, p.blur_on, p.axis_keep)
    args += (p.frame_joint_mask, fill, bone_parents(25), 8, 0, 15, False)
    for backend in ("torch",) + (("cpp",) if cpp_missing is None else ()):
        torch.library.opcheck(torch.ops.skelfast.augment.default, (*args, backend))

    def step(fill):
        return skelfast.ops.augment(x, valid, p, fill).square().sum()

    eager = torch.autograd.grad(step(fill), fill)[0]
    compiled = torch.autograd.grad(torch.compile(step, fullgraph=True)(fill), fill)[0]
    assert_close(compiled, eager, 1e-4, 1e-5, "compiled d fill")


def test_bad_input_raises_clear_errors():
    x, valid = _data(2, 9, 25, 2)
    p = AugmentParams.identity(valid, 25, 8)
    with pytest.raises(ValueError, match="5 dimensions"):
        skelfast.ops.augment(x[0], valid, p)
    with pytest.raises(ValueError, match=r"valid lengths must be in \[1, T_in=9\]"):
        skelfast.ops.augment(x, torch.tensor([0, 5]), p)
    with pytest.raises(ValueError, match=r"valid lengths must be in \[1, T_in=9\]"):
        skelfast.ops.augment(x, torch.tensor([10, 5]), p)
    with pytest.raises(ValueError, match="drawn for 2 samples but x has N=3"):
        skelfast.ops.augment(torch.cat([x, x[:1]]), torch.tensor([9, 5, 5]), p)
    with pytest.raises(ValueError, match="params.joint_select has shape"):
        skelfast.ops.augment(x, valid, p.replace(joint_select=torch.zeros(2, 17, dtype=torch.bool)))
    with pytest.raises(ValueError, match=r"noise_seed must be in \[0, 2\^63 - N\)"):
        skelfast.ops.augment(x, valid, p.replace(noise_seed=torch.tensor(2**63 - 2)))
    blurred = p.replace(blur_on=torch.tensor([False, True]))
    with pytest.raises(ValueError, match="blur_sigma must be > 0 where blur_on"):
        skelfast.ops.augment(x, valid, blurred.replace(blur_sigma=torch.tensor([1.0, 0.0])))
    skelfast.ops.augment(x, valid, blurred.replace(blur_sigma=torch.tensor([0.0, 1.0])))  # off: not read
    with pytest.raises(ValueError, match="3 coordinate channels"):
        skelfast.ops.augment(x[:, :2], valid, p)
    with pytest.raises(TypeError, match="integer tensor"):
        skelfast.ops.augment(x, valid.float(), p)
    with pytest.raises(ValueError, match="stream must be one of"):
        skelfast.ops.augment(x, valid, p.replace(stream="velocity"))
    with pytest.raises(ValueError, match="bone stream knows the NTU layout"):
        skelfast.ops.augment(x[..., :17, :], valid, AugmentParams.identity(valid, 17, 8, stream="bone"))
    with pytest.raises(ValueError, match="fill must hold one value"):
        skelfast.ops.augment(x, valid, p, torch.zeros(2))


@requires_cpp
def test_cpp_kernel_bad_input_raises_clear_errors():
    x, valid = _data(2, 9, 25, 2)
    p = AugmentParams.identity(valid, 25, 8)
    with skelfast.use_backend("augment=cpp"):
        with pytest.raises(skelfast.BackendUnavailableError, match="support float32, float64, not float16"):
            skelfast.ops.augment(x.half(), valid, p)
        with pytest.raises(ValueError, match=r"valid lengths must be in \[1, T_in=9\]"):
            skelfast.ops.augment(x, torch.tensor([0, 5]), p)
    fill, parents = torch.tensor(0.0), torch.arange(25)
    # the kernel checks what it is given too (it is reachable as torch.ops.skelfast.augment_cpu)
    good = (
        x,
        valid,
        p.start,
        p.length,
        p.reverse,
        8,
        p.matrix,
        p.joint_matrix,
        p.joint_select,
        p.joint_source,
    )
    good += (p.noise_std, 0, p.blur_on, p.blur_sigma, p.blur_size, p.blur_normalized, p.axis_keep, None)
    good += (fill, parents, 0)
    op = torch.ops.skelfast.augment_cpu
    assert op(*good).shape == (2, 3, 8, 25, 2)
    cases = {
        0: (x[:, :2], r"x must be \(N, 3, T_in, V, M\)"),
        1: (torch.tensor([9, 10]), r"valid lengths must be in \[1, T_in=9\]"),
        3: (torch.tensor([0, 4]), "length must be >= 1"),
        4: (torch.zeros(3, dtype=torch.bool), r"reverse must have shape \(2\)"),
        5: (0, "t_out must be >= 1"),
        6: (p.matrix[:1], r"matrix must be \(N, 3, 3\)"),
        9: (torch.full((2, 25), 25), r"joint_source must index joints in \[0, 25\)"),
        11: (-1, r"noise_seed must be in \[0, 2\^63 - N\)"),
        13: (torch.ones(3), r"blur_sigma must have shape \(2\)"),
        14: (4, "blur_size must be odd and >= 1, got 4"),
        17: (torch.zeros(7, 25, dtype=torch.bool), r"frame_joint_mask must have shape \(8, 25\)"),
        20: (3, "stream must be 0, 1 or 2"),
    }
    for index, (bad, message) in cases.items():
        args = list(good)
        args[index] = bad
        with pytest.raises(RuntimeError, match=message):
            op(*args)


def test_every_kernel_configuration_compiles_ahead_of_time():
    from skelfast import aot

    proc = aot.compile_in_subprocess(("skelfast.kernels.augment",))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 3 * len(aot.ARCHS)
    assert all(r["fits"] for r in rows), rows
    assert {r["arch"] for r in rows} == set(aot.ARCHS)
    assert math.isfinite(sum(r["registers"] for r in rows))
