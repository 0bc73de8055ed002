// Plain-C++ interface between the torch-facing CUDA registration (cuda_ops.cpp, compiled by the host
// compiler) and the kernels (*.cu, compiled by nvcc). Keeping torch headers out of the .cu files saves
// about 1.5 minutes of nvcc per file.
//
// Every launcher: validates nothing (cuda_ops.cpp does that), returns early on empty input, launches on
// `stream`, and returns cudaGetLastError() after its launches. All data tensors are "row-dense": row n of
// D elements starts at element n * D of its buffer.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace lst_fast {
namespace cuda {

enum class DType : int { Float32 = 0, Float64 = 1, Float16 = 2, BFloat16 = 3 };

// Doubles of scratch memory orthogonal_step needs for N rows of D elements (0 when it needs none).
int64_t orthogonal_step_workspace(int64_t N, int64_t D);

// The fused LST step, per row n (opmath = float for Float16/BFloat16/Float32, double for Float64):
//   v      = (opmath)target - (opmath)x                       (rounded to opmath)
//   gv, gg = sum_i (double)g_i * (double)v_i, sum_i (double)g_i^2
//   coef   = gg > 0 ? gv / gg : 0                              (double)
//   vp     = (opmath)((double)v - coef * (double)g)
//   d      = clamp((opmath)adv + (opmath)(adv_step_size / 2) * (opmath)g, -(opmath)adv_step_size, +...)
//   xn     = clamp(((opmath)x + (opmath)step_size * vp) - d, (opmath)lo, (opmath)hi)
//   adv    = (T)d ; out = (T)xn
// Each arithmetic operation is rounded on its own (no fused multiply-add), so results match the
// pure-PyTorch reference bit for bit except for the order of the per-row double sums. The sums are
// deterministic: the same inputs give the same bits on every run.
cudaError_t orthogonal_step(DType dtype, const void* x, const void* target, const void* grad, void* adv,
                            void* out, double* workspace, int64_t N, int64_t D, double step_size,
                            double adv_step_size, double lo, double hi, cudaStream_t stream);

// The confidence-constrained accept, per row n:
//   p           = exp(l_c - m) / sum_k exp(l_k - m) in double, m = max_k l_k, c = label[n]
//                 (p = NaN when c is outside [0, K): no out-of-bounds read, never accepted)
//   accepted[n] = ((double)p0[n] - p) < threshold
//   if accepted: x[n] = candidate[n], grad[n] = candidate_grad[n] (row_bytes bytes each),
//                confidence[n] = p
// logits_dtype is Float32 or Float64; conf_dtype (p0 and confidence) is Float32 or Float64. The rows are
// copied as raw bytes, so the data dtype does not matter here.
cudaError_t confidence_accept(DType logits_dtype, const void* logits, int64_t K, const int64_t* label,
                              DType conf_dtype, const void* p0, void* confidence, double threshold,
                              void* x, const void* candidate, void* grad, const void* candidate_grad,
                              int64_t row_bytes, bool* accepted, int64_t N, cudaStream_t stream);

// Batched simplex points: vertices (N, K, D), weights (P, K) in opmath (float, or double for Float64),
// out (N * P, D):  out[n * P + p, i] = (T) sum_k w[p, k] * (opmath)vertices[n, k, i],
// summed in order k = 0, 1, ... with each product and sum rounded on its own.
cudaError_t simplex_points(DType dtype, const void* vertices, const void* weights, void* out, int64_t N,
                           int64_t K, int64_t P, int64_t D, cudaStream_t stream);

}  // namespace cuda
}  // namespace lst_fast
