// CPU kernel of lst_fast::simplex_points (schema in ../lst_fast.cpp, semantics in ../cuda/launchers.h).
#include <algorithm>

#include "../kernel_guards.h"

namespace lst_fast {
namespace {

constexpr int64_t kChunk = 4096;  // elements per task; its accumulator lives on the stack

template <typename scalar_t>
void simplex_points_kernel(const scalar_t* vertices, const opmath_t<scalar_t>* weights, scalar_t* out,
                           int64_t n, int64_t k, int64_t p, int64_t d) {
  using opmath = opmath_t<scalar_t>;
  const int64_t chunks = (d + kChunk - 1) / kChunk;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, std::min(d, kChunk)));
  torch::stable::parallel_for(0, n * p * chunks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / chunks;  // output row = sample * p + point
      const int64_t sample = row / p;
      const opmath* w = weights + (row % p) * k;
      const int64_t lo_i = (task % chunks) * kChunk;
      const int64_t hi_i = std::min(lo_i + kChunk, d);
      const scalar_t* v = vertices + sample * k * d;
      scalar_t* o = out + row * d;
      // Vertex by vertex over the chunk (contiguous, vectorizable), accumulating in a local buffer.
      opmath acc[kChunk];
      const int64_t len = hi_i - lo_i;
      for (int64_t i = 0; i < len; ++i) acc[i] = w[0] * static_cast<opmath>(v[lo_i + i]);
      for (int64_t j = 1; j < k; ++j) {
        const opmath wj = w[j];
        const scalar_t* vj = v + j * d + lo_i;
        for (int64_t i = 0; i < len; ++i) acc[i] = acc[i] + wj * static_cast<opmath>(vj[i]);
      }
      for (int64_t i = 0; i < len; ++i) o[lo_i + i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

Tensor simplex_points_cpu(Tensor vertices, Tensor weights) {
  constexpr const char* op = "lst_fast_kernels::simplex_points";
  guard_simplex_points(vertices, weights, DeviceType::CPU);
  Tensor out = new_tensor(vertices, simplex_points_shape(vertices, weights), vertices.scalar_type());
  if (out.numel() == 0) return out;

  const Tensor v = torch::stable::contiguous(vertices);
  const Tensor w = simplex_weights_in_opmath(vertices, weights);
  const int64_t n = v.size(0), k = v.size(1), p = w.size(0);
  const int64_t d = v.numel() / (n * k);
  dispatch_float(v.scalar_type(), op, [&](auto tag) {
    using scalar_t = decltype(tag);
    simplex_points_kernel<scalar_t>(v.const_data_ptr<scalar_t>(), w.const_data_ptr<opmath_t<scalar_t>>(),
                                    out.mutable_data_ptr<scalar_t>(), n, k, p, d);
  });
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(lst_fast_kernels, CPU, m) {
  m.impl("simplex_points", TORCH_BOX(&simplex_points_cpu));
}

}  // namespace lst_fast
