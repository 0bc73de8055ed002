// CUDA registration of the lst_fast operators: argument checks, layout handling, device guard and
// stream, then the plain launchers of launchers.h. This file is compiled by the host compiler, so the
// heavy torch headers stay out of nvcc's way.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../op_checks.h"
#include "launchers.h"

namespace lst_fast {
namespace {

cuda::DType to_launcher_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::DType::Float32;
    case at::kDouble: return cuda::DType::Float64;
    case at::kHalf: return cuda::DType::Float16;
    case at::kBFloat16: return cuda::DType::BFloat16;
    default: LST_CHECK(false, "lst_fast: unsupported dtype ", c10::toString(t));
  }
}

void check_launch(cudaError_t err, const char* op) {
  LST_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

at::Tensor orthogonal_step_cuda(const at::Tensor& x, const at::Tensor& target, const at::Tensor& grad,
                                at::Tensor& adv, double step_size, double adv_step_size, double lo, double hi) {
  constexpr const char* op = "lst_fast::orthogonal_step";
  check_orthogonal_step_args(x, target, grad, adv);
  check_device_type(x, at::kCUDA, op);
  check_orthogonal_step_scalars(step_size, adv_step_size, lo, hi);
  const c10::cuda::CUDAGuard guard(x.device());

  at::Tensor out = at::empty_like(x);
  if (x.numel() == 0) return out;

  const RowDenseViews v({x, target, grad, adv, out});  // in place for contiguous and channels-last
  const int64_t n = x.size(0);
  const int64_t d = x.numel() / n;
  const int64_t ws_size = cuda::orthogonal_step_workspace(n, d);
  // From the caching allocator: no cudaMalloc in steady state and safe inside CUDA graph capture.
  at::Tensor workspace = at::empty({std::max<int64_t>(ws_size, 1)}, x.options().dtype(at::kDouble));
  check_launch(cuda::orthogonal_step(to_launcher_dtype(x.scalar_type()), v[0].const_data_ptr(), v[1].const_data_ptr(),
                                     v[2].const_data_ptr(), v[3].mutable_data_ptr(), v[4].mutable_data_ptr(),
                                     workspace.mutable_data_ptr<double>(), n, d, step_size, adv_step_size, lo, hi,
                                     c10::cuda::getCurrentCUDAStream()),
               op);
  v.write_back(3);
  v.write_back(4);
  return out;
}

at::Tensor confidence_accept_cuda(const at::Tensor& logits, const at::Tensor& label, const at::Tensor& p0,
                                  double threshold, at::Tensor& x, const at::Tensor& candidate, at::Tensor& grad,
                                  const at::Tensor& candidate_grad, at::Tensor& confidence) {
  constexpr const char* op = "lst_fast::confidence_accept";
  check_confidence_accept_args(logits, label, p0, x, candidate, grad, candidate_grad, confidence);
  check_device_type(x, at::kCUDA, op);
  LST_CHECK(!std::isnan(threshold), op, ": threshold must not be NaN");
  const c10::cuda::CUDAGuard guard(x.device());

  const int64_t n = x.size(0);
  at::Tensor accepted = at::empty({n}, label.options().dtype(at::kBool));
  if (n == 0) return accepted;

  // Reduced-precision logits are widened once (N x K, tiny) so the kernel has two logit types only.
  const at::Tensor logits_w =
      (logits.scalar_type() == at::kDouble ? logits : logits.to(at::kFloat)).contiguous();
  const at::Tensor label_c = label.contiguous();
  const at::Tensor p0_c = p0.contiguous();
  at::Tensor conf_w = confidence.is_contiguous() ? confidence : confidence.contiguous();

  const RowDenseViews v({x, candidate, grad, candidate_grad});
  const int64_t row_bytes = x.numel() / n * x.element_size();

  check_launch(cuda::confidence_accept(to_launcher_dtype(logits_w.scalar_type()), logits_w.const_data_ptr(),
                                       logits_w.size(1), label_c.const_data_ptr<int64_t>(),
                                       to_launcher_dtype(p0_c.scalar_type()), p0_c.const_data_ptr(),
                                       conf_w.mutable_data_ptr(), threshold, v[0].mutable_data_ptr(),
                                       v[1].const_data_ptr(), v[2].mutable_data_ptr(), v[3].const_data_ptr(), row_bytes,
                                       accepted.mutable_data_ptr<bool>(), n, c10::cuda::getCurrentCUDAStream()),
               op);
  if (!conf_w.is_same(confidence)) confidence.copy_(conf_w);
  v.write_back(0);
  v.write_back(2);
  return accepted;
}

at::Tensor simplex_points_cuda(const at::Tensor& vertices, const at::Tensor& weights) {
  constexpr const char* op = "lst_fast::simplex_points";
  check_simplex_points_args(vertices, weights);
  check_device_type(vertices, at::kCUDA, op);
  const c10::cuda::CUDAGuard guard(vertices.device());
  at::Tensor out = at::empty(simplex_points_shape(vertices, weights), vertices.options());
  if (out.numel() == 0) return out;

  const at::Tensor v = vertices.contiguous();
  const at::Tensor w = simplex_weights_in_opmath(vertices, weights);
  const int64_t n = v.size(0), k = v.size(1), p = w.size(0);
  check_launch(cuda::simplex_points(to_launcher_dtype(v.scalar_type()), v.const_data_ptr(), w.const_data_ptr(),
                                    out.mutable_data_ptr(), n, k, p, v.numel() / (n * k),
                                    c10::cuda::getCurrentCUDAStream()),
               op);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(lst_fast, CUDA, m) {
  m.impl("orthogonal_step", &orthogonal_step_cuda);
  m.impl("confidence_accept", &confidence_accept_cuda);
  m.impl("simplex_points", &simplex_points_cuda);
}

}  // namespace lst_fast
