#pragma once
// Shared checks of the graph convolution kernels (CPU and CUDA).
#include <ATen/ATen.h>

namespace skelfast {

inline void check_graph_conv_inputs(
    const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias, const at::Tensor& A) {
  TORCH_CHECK(x.dim() == 4, "graph_conv: x must be (N, C_in, T, V), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 2, "graph_conv: weight must be (K*C_out, C_in), got ", weight.sizes());
  TORCH_CHECK(A.dim() == 3 && A.size(1) == A.size(2), "graph_conv: A must be (K, V, V), got ", A.sizes());
  TORCH_CHECK(x.size(3) == A.size(1), "graph_conv: x has V=", x.size(3), " joints but A has V=", A.size(1));
  TORCH_CHECK(A.size(0) > 0 && weight.size(0) % A.size(0) == 0, "graph_conv: weight rows (", weight.size(0),
              ") must be K*C_out with K=", A.size(0));
  TORCH_CHECK(weight.size(1) == x.size(1), "graph_conv: weight has C_in=", weight.size(1), " but x has ",
              x.size(1), " channels");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && A.scalar_type() == x.scalar_type(),
              "graph_conv: x, weight and A must share one dtype");
  TORCH_CHECK(weight.device() == x.device() && A.device() == x.device(),
              "graph_conv: x, weight and A must be on one device");
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), "graph_conv: bias must be (K*C_out,), got ",
                bias->sizes());
    TORCH_CHECK(bias->scalar_type() == x.scalar_type() && bias->device() == x.device(),
                "graph_conv: bias must match x in dtype and device");
  }
}

// The bias enters every output as sum_k b_k[o] * colsum(A_k)[w]: an (O, V) table, broadcast over t.
inline at::Tensor graph_conv_bias_table(const at::Tensor& bias, const at::Tensor& A, int64_t K, int64_t O) {
  return at::matmul(bias.view({K, O}).t(), A.sum(1));  // (O, K) @ (K, V)
}

// The gradients that flow through that table, from gsum (O, V) = grad summed over n and t:
// db[k*O + o] = sum_w gsum[o, w] colsum(A_k)[w], and dA[k, v, w] gains sum_o b_k[o] gsum[o, w].
inline at::Tensor graph_conv_bias_grad(const at::Tensor& A, const at::Tensor& gsum, int64_t K, int64_t O) {
  return at::matmul(A.sum(1), gsum.t()).reshape({K * O}).contiguous();
}

inline at::Tensor graph_conv_bias_adjacency_grad(const at::Tensor& bias, const at::Tensor& gsum, int64_t K,
                                                 int64_t O) {
  return at::matmul(bias.view({K, O}), gsum).unsqueeze(1);  // (K, 1, V), the same for every v
}

}  // namespace skelfast
