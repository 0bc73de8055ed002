// CPU kernel of lst_fast::simplex_points (schema in ../lst_fast.cpp, semantics in ../cuda/launchers.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../op_checks.h"

namespace lst_fast {
namespace {

constexpr int64_t kChunk = 4096;  // elements per task; its accumulator lives on the stack

template <typename scalar_t>
void simplex_points_kernel(const scalar_t* vertices, const at::opmath_type<scalar_t>* weights, scalar_t* out,
                           int64_t n, int64_t k, int64_t p, int64_t d) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t chunks = (d + kChunk - 1) / kChunk;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, std::min(d, kChunk)));
  at::parallel_for(0, n * p * chunks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / chunks;  // output row = sample * p + point
      const int64_t sample = row / p;
      const opmath_t* w = weights + (row % p) * k;
      const int64_t lo_i = (task % chunks) * kChunk;
      const int64_t hi_i = std::min(lo_i + kChunk, d);
      const scalar_t* v = vertices + sample * k * d;
      scalar_t* o = out + row * d;
      // Vertex by vertex over the chunk (contiguous, vectorizable), accumulating in a local buffer.
      opmath_t acc[kChunk];
      const int64_t len = hi_i - lo_i;
      for (int64_t i = 0; i < len; ++i) acc[i] = w[0] * static_cast<opmath_t>(v[lo_i + i]);
      for (int64_t j = 1; j < k; ++j) {
        const opmath_t wj = w[j];
        const scalar_t* vj = v + j * d + lo_i;
        for (int64_t i = 0; i < len; ++i) acc[i] = acc[i] + wj * static_cast<opmath_t>(vj[i]);
      }
      for (int64_t i = 0; i < len; ++i) o[lo_i + i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

at::Tensor simplex_points_cpu(const at::Tensor& vertices, const at::Tensor& weights) {
  check_simplex_points_args(vertices, weights);
  check_device_type(vertices, at::kCPU, "lst_fast::simplex_points");
  at::Tensor out = at::empty(simplex_points_shape(vertices, weights), vertices.options());
  if (out.numel() == 0) return out;

  const at::Tensor v = vertices.contiguous();
  const at::Tensor w = simplex_weights_in_opmath(vertices, weights);
  const int64_t n = v.size(0), k = v.size(1), p = w.size(0);
  const int64_t d = v.numel() / (n * k);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "simplex_points_cpu", [&] {
    simplex_points_kernel<scalar_t>(v.const_data_ptr<scalar_t>(), w.const_data_ptr<at::opmath_type<scalar_t>>(),
                                    out.mutable_data_ptr<scalar_t>(), n, k, p, d);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(lst_fast, CPU, m) {
  m.impl("simplex_points", &simplex_points_cpu);
}

}  // namespace lst_fast
