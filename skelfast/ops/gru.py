"""``skelfast.ops.gru``: a multi-layer, optionally bidirectional GRU over zero-padded sequences of
different lengths, with ``nn.GRU``'s packed-sequence semantics and parameters.

PyTorch's CPU GRU runs every time step as a dozen small ATen ops and differentiates them through
autograd, so its backward costs about ten times its forward (one weight-gradient GEMM and a dozen
elementwise kernels per step). The C++ kernel (csrc/gru/) keeps only what recurs inside the time
loop (one GEMM ``h W_hh^T`` and one vectorised pass over the gates per step, forward; one GEMM
``d(gh) W_hh`` per step, backward) and batches the rest over all valid frames: the input projection
forward, and ``d(gi) W_ih``, ``d(gi)^T x`` and ``d(gh)^T h_prev`` backward.

Backends: ``cpp`` (CPU, float32/float64: ``torch.ops.skelfast.gru_layer``, one direction of one
layer per call) and ``reference`` (``torch._VF.gru`` on a packed sequence: exactly ``nn.GRU``'s path,
used on CUDA, where cuDNN's GRU is the fast one, for half precision, and under autocast when a
half-precision x meets float32 weights, where nn.GRU's own mixed-precision rules apply). Between layers, training
dropout draws its mask with ``skelfast.nn.dropout`` on the cpp backend (nn.GRU's distribution,
not its random stream). The C++ op's fake kernel and autograd formula are registered here, so it
passes ``torch.library.opcheck`` and runs under ``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from skelfast import backends, reference
from skelfast.ops._checks import check_floating, check_rank, check_same
from skelfast.ops.dropout import dropout as dropout_op
from skelfast.profiling import profiled

OP = "gru"
CPP_DTYPES = (torch.float32, torch.float64)


def _check_inputs(
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    h0: torch.Tensor | None,
    weights: Sequence[torch.Tensor],
    num_layers: int,
    bidirectional: bool,
    dropout: float,
) -> tuple[int, bool]:
    """Validate one call; returns (hidden size, tensors per cell: 4 with biases, else 2)."""
    check_rank("gru: x", x, 3, "(B, T, I)")
    check_floating("gru: x", x)
    if num_layers < 1:
        raise ValueError(f"gru: num_layers must be >= 1, got {num_layers}")
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"gru: dropout must be in [0, 1], got {dropout}")
    directions = 2 if bidirectional else 1
    per_cell = len(weights) // (num_layers * directions) if weights else 0
    if per_cell not in (2, 4) or len(weights) != per_cell * num_layers * directions:
        raise ValueError(
            f"gru: expected {2 * num_layers * directions} (no bias) or {4 * num_layers * directions} "
            f"weights for {num_layers} layer(s) x {directions} direction(s) in nn.GRU's _flat_weights "
            f"order, got {len(weights)}"
        )
    # under autocast a half-precision x meets float32 weights, as in nn.GRU (whose path then runs)
    mixed_ok = torch.is_autocast_enabled(x.device.type)
    check_same(OP, [("x", x), *((f"weights[{i}]", w) for i, w in enumerate(weights))], dtype=not mixed_ok)
    if weights[1].dim() != 2:
        raise ValueError(
            f"gru: weights[1] must be the first cell's w_hh (3H, H), got {tuple(weights[1].shape)}"
        )
    hidden = weights[1].shape[1]
    for index in range(num_layers * directions):
        w_ih, w_hh = weights[per_cell * index], weights[per_cell * index + 1]
        in_size = x.shape[2] if index < directions else directions * hidden
        if tuple(w_ih.shape) != (3 * hidden, in_size) or tuple(w_hh.shape) != (3 * hidden, hidden):
            raise ValueError(
                f"gru: cell {index} (layer {index // directions}) needs w_ih ({3 * hidden}, {in_size}) and "
                f"w_hh ({3 * hidden}, {hidden}), got {tuple(w_ih.shape)} and {tuple(w_hh.shape)}"
            )
        for b in weights[per_cell * index + 2 : per_cell * index + per_cell]:
            if tuple(b.shape) != (3 * hidden,):
                raise ValueError(f"gru: biases must be ({3 * hidden},), got {tuple(b.shape)}")
    batch, frames = x.shape[0], x.shape[1]
    if lengths is not None:
        if lengths.dim() != 1 or lengths.shape[0] != batch:
            raise ValueError(f"gru: lengths must be ({batch},), one per sequence, got {tuple(lengths.shape)}")
        if lengths.is_floating_point() or lengths.is_complex():
            raise TypeError(f"gru: lengths must be an integer tensor, got {lengths.dtype}")
        # the values are checked again inside the kernel; reading them here would break a compiled graph
        if (
            batch
            and not torch.compiler.is_compiling()
            and (int(lengths.min()) < 1 or int(lengths.max()) > frames)
        ):
            raise ValueError(
                f"gru: lengths must be in [1, T={frames}], got values in "
                f"[{int(lengths.min())}, {int(lengths.max())}]"
            )
    if h0 is not None and tuple(h0.shape) != (num_layers * directions, batch, hidden):
        raise ValueError(
            f"gru: h0 must be (num_layers * directions, B, H) = ({num_layers * directions}, {batch}, {hidden}), "
            f"got {tuple(h0.shape)}"
        )
    return hidden, per_cell


def _cpp_has_op() -> bool:
    return backends.cpp_extension_error() is None and hasattr(torch.ops.skelfast, "gru_layer")


@backends.constant_under_compile  # decided once at trace time under torch.compile
def _backend(device: torch.device, dtype: torch.dtype) -> str:
    def cpp_check() -> str | None:
        if device.type != "cpu":
            return f"the gru cpp kernel is CPU-only (got a {device.type} tensor; cuDNN's GRU runs there)"
        return backends.cpp_reason(device, dtype, CPP_DTYPES)

    return backends.choose(OP, {"cpp": cpp_check, "reference": lambda: None}, order=("cpp", "reference"))


@profiled("skelfast.gru")
def gru(
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    weights: Sequence[torch.Tensor],
    num_layers: int,
    bidirectional: bool,
    h0: torch.Tensor | None = None,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.GRU(batch_first=True)`` over zero-padded sequences of the given lengths.

    Args:
        x: (B, T, I) sequences, zero-padded past each length.
        lengths: (B,) integers in [1, T] (any device), or None when every sequence is T long.
        weights: nn.GRU's ``_flat_weights``: per layer, per direction (forward first),
            w_ih (3H, I_l), w_hh (3H, H) and, with bias, b_ih (3H,), b_hh (3H,).
        num_layers, bidirectional: as nn.GRU (D = 2 directions when bidirectional, else 1).
        h0: (num_layers * D, B, H) initial states, or None for zeros.
        dropout, training: dropout on every layer's output but the last, in training.

    Returns:
        output (B, T, D*H), zero past each length; h_n (num_layers * D, B, H), each sequence's state
        after its last valid frame (for the reverse direction, after frame 0). Differentiable in x,
        h0 and the weights.
    """
    hidden, per_cell = _check_inputs(x, lengths, h0, weights, num_layers, bidirectional, dropout)
    directions = 2 if bidirectional else 1
    if h0 is None:
        h0 = x.new_zeros(num_layers * directions, x.shape[0], hidden)
    if x.dtype != weights[0].dtype or _backend(x.device, x.dtype) == "reference":
        return reference.gru(x, lengths, h0, weights, num_layers, bidirectional, dropout, training)
    if lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
    lengths = lengths.to("cpu", torch.int64)
    layer_input, h_n = x, []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            cell = layer * directions + direction
            w_ih, w_hh, *bias = weights[per_cell * cell : per_cell * (cell + 1)]
            b_ih, b_hh = bias if bias else (None, None)
            out, h = _gru_layer(layer_input, lengths, h0[cell], w_ih, w_hh, b_ih, b_hh, direction == 1)
            outputs.append(out)
            h_n.append(h)
        layer_input = torch.cat(outputs, dim=2) if directions == 2 else outputs[0]
        if training and dropout > 0 and layer < num_layers - 1:
            layer_input = dropout_op(layer_input, dropout, True)
    return layer_input, torch.stack(h_n)


def _gru_layer(
    x: torch.Tensor,
    lengths: torch.Tensor,
    h0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None,
    b_hh: torch.Tensor | None,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = (x, h0, w_ih, w_hh, b_ih, b_hh)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    with torch.autocast(x.device.type, enabled=False):  # the kernel computes in x's dtype
        out, h_n, _ = torch.ops.skelfast.gru_layer(x, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, save)
    return out, h_n


# --- fake kernels and autograd for the C++ op ---------------------------------------------------


def _register() -> None:
    @torch.library.register_fake("skelfast::gru_layer")
    def _fake(x, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, save_gates):  # noqa: ANN001, ANN202
        batch, frames, hidden = x.shape[0], x.shape[1], w_hh.shape[1]
        saved = x.new_empty((batch, frames, 4 * hidden)) if save_gates else x.new_empty((0,))
        return x.new_empty((batch, frames, hidden)), x.new_empty((batch, hidden)), saved

    @torch.library.register_fake("skelfast::gru_layer_backward")
    def _fake_backward(grad_out, grad_hn, x, lengths, h0, w_ih, w_hh, out, saved, reverse, has_bias, mask):  # noqa: ANN001, ANN202
        def like(t: torch.Tensor, wanted: bool) -> torch.Tensor:
            return torch.empty_like(t) if wanted else x.new_empty((0,))

        bias = x.new_empty((w_hh.shape[0],)) if (mask[3] and has_bias) else x.new_empty((0,))
        return (
            like(x, mask[0]),
            like(h0, mask[1]),
            like(w_ih, mask[2]),
            like(w_hh, mask[2]),
            bias,
            torch.empty_like(bias),
        )

    def setup_context(ctx, inputs, output):  # noqa: ANN001, ANN202
        x, lengths, h0, w_ih, w_hh, b_ih, _, reverse, _ = inputs
        out, _, saved = output
        ctx.save_for_backward(x, lengths, h0, w_ih, w_hh, out, saved)
        ctx.reverse, ctx.has_bias = reverse, b_ih is not None
        # unused outputs' gradients stay None: materialised, the saved gates' alone is a (B, T, 4H) zero
        # fill each backward (20 ms a step in ISC's GRU)
        ctx.set_materialize_grads(False)

    def backward(ctx, grad_out, grad_hn, _grad_saved):  # noqa: ANN001, ANN202
        x, lengths, h0, w_ih, w_hh, out, saved = ctx.saved_tensors
        need = ctx.needs_input_grad  # x, lengths, h0, w_ih, w_hh, b_ih, b_hh, reverse, save_gates
        mask = [need[0], need[2], need[3] or need[4], ctx.has_bias and (need[5] or need[6])]
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out
        grad_hn = torch.zeros_like(h0) if grad_hn is None else grad_hn
        dx, dh0, dw_ih, dw_hh, db_ih, db_hh = torch.ops.skelfast.gru_layer_backward(
            grad_out, grad_hn, x, lengths, h0, w_ih, w_hh, out, saved, ctx.reverse, ctx.has_bias, mask
        )
        return (
            dx if need[0] else None,
            None,
            dh0 if need[2] else None,
            dw_ih if need[3] else None,
            dw_hh if need[4] else None,
            db_ih if need[5] else None,
            db_hh if need[6] else None,
            None,
            None,
        )

    torch.library.register_autograd("skelfast::gru_layer", backward, setup_context=setup_context)


if _cpp_has_op():
    _register()
