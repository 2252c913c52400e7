// Schemas of the skelfast ops and the Python module stub that loads them.
//
// The module has no Python functions: importing skelfast._C runs the TORCH_LIBRARY static
// initialisers below, and the ops are then reached as torch.ops.skelfast.*. Only the limited
// Python C API is used, so one build serves every CPython >= 3.10 (abi3).
#include <Python.h>
#include <torch/library.h>
#include <torch/headeronly/version.h>

TORCH_LIBRARY(skelfast, m) {
  // y[n,o,t,w] = sum_k sum_v (W_k x + b_k)[n,o,t,v] * A[k,v,w]
  m.def("graph_conv(Tensor x, Tensor weight, Tensor? bias, Tensor A) -> Tensor");
  // Gradients for (x, weight, bias, A); entries whose output_mask is false come back empty.
  m.def(
      "graph_conv_backward(Tensor grad, Tensor x, Tensor weight, Tensor? bias, Tensor A, "
      "bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
  // y = relu?(BatchNorm(x) * keep * keep_scale + residual), x (N, C, *); batch statistics unless
  // mean and var are given. Returns (y, mean, biased var, positive): positive = y > 0 as bools (the
  // backward's ReLU gate) with relu and relu_mask, else empty.
  m.def(
      "batch_norm_act(Tensor x, Tensor? weight, Tensor? bias, Tensor? mean, Tensor? var, Tensor? residual, "
      "Tensor? keep, float keep_scale, bool relu, float eps, bool relu_mask) -> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients (x, weight, bias, residual); output_mask: (x, weight and bias, residual); positive: the
  // forward's (read with relu only).
  m.def(
      "batch_norm_act_backward(Tensor grad, Tensor x, Tensor positive, Tensor? weight, Tensor mean, Tensor var, "
      "Tensor? keep, float keep_scale, bool relu, float eps, bool batch_stats, bool[3] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  // A (R, S) matrix along time: to_points (N, C, S, V) -> (R, C, N, V), else (S, C, N, V) ->
  // (N, C, R, V) plus bias[c] (the two passes of skelfast.ops.temporal_conv; each the other's adjoint).
  m.def("time_transform(Tensor src, Tensor matrix, Tensor? bias, bool to_points) -> Tensor");
  // One direction of one GRU layer over zero-padded sequences of the given lengths (packed-sequence
  // semantics, PyTorch's gate order r, z, n). Returns (output (B, T, H), h_n (B, H), the gates saved
  // for the backward (B, T, 4H), or an empty tensor when save_gates is false).
  m.def(
      "gru_layer(Tensor x, Tensor lengths, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "bool reverse, bool save_gates) -> (Tensor, Tensor, Tensor)");
  // Gradients (x, h0, w_ih, w_hh, b_ih, b_hh); output_mask: (x, h0, the weights, the biases).
  m.def(
      "gru_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor x, Tensor lengths, Tensor h0, Tensor w_ih, "
      "Tensor w_hh, Tensor output, Tensor saved, bool reverse, bool has_bias, bool[4] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

#define SKELFAST_STR2(x) #x
#define SKELFAST_STR(x) SKELFAST_STR2(x)

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "skelfast compiled ops (registered as torch.ops.skelfast.*)", -1, nullptr,
  };
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#ifdef WITH_CUDA
  PyModule_AddIntConstant(module, "WITH_CUDA", 1);
#else
  PyModule_AddIntConstant(module, "WITH_CUDA", 0);
#endif
  // The torch this was compiled against; the loader refuses a mismatch with a clear message.
  PyModule_AddStringConstant(
      module, "TORCH_VERSION",
      SKELFAST_STR(TORCH_VERSION_MAJOR) "." SKELFAST_STR(TORCH_VERSION_MINOR) "." SKELFAST_STR(TORCH_VERSION_PATCH));
  return module;
}
}
