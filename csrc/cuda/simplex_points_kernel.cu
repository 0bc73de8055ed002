// Batched simplex points (semantics in launchers.h):
//   out[n * P + p, i] = (T) sum_k w[p, k] * (opmath)vertices[n, k, i], in order k = 0, 1, ...
//
// Grid: one logical block per (output row r = n * P + p, chunk of D). Consecutive logical blocks walk
// the chunks of one output row, then the next p of the same n, so the K vertex rows of n are re-read
// from L2 by the P output rows that need them. Each thread holds S accumulator vectors and keeps
// kKUnroll * S independent loads in flight per step over k.
#include "launchers.h"
#include "device_utils.cuh"

namespace lst_fast {
namespace cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;
constexpr int kMinBlocks = 4;  // 1024 resident threads per SM -> at most 64 registers
constexpr int kKUnroll = 4;    // vertices loaded ahead per step over k

template <typename T, int VEC, int S>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    simplex_points_kernel(const T* vertices, const opmath_t<T>* weights, T* out, int64_t N, int64_t K,
                          int64_t P, int64_t D, int64_t chunks) {
  using O = opmath_t<T>;
  constexpr int kChunkVecs = S * kThreads;
  const int64_t nvec = D / VEC;  // VEC divides D on the vector path
  const int64_t total = N * P * chunks;
  for (int64_t blk = blockIdx.x; blk < total; blk += gridDim.x) {
    const int64_t r = blk / chunks;
    const int64_t c = blk - r * chunks;
    const int64_t n = r / P;
    const int64_t p = r - n * P;
    const int64_t v0 = c * kChunkVecs;
    const int len = static_cast<int>(nvec - v0 < kChunkVecs ? nvec - v0 : kChunkVecs);
    const int t = static_cast<int>(threadIdx.x);
    const T* vrow = vertices + (n * K * nvec + v0) * VEC;  // vertex k of n starts k * D later
    const O* w = weights + p * K;

    O acc[S][VEC];
#pragma unroll
    for (int s = 0; s < S; ++s) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) acc[s][j] = O(0);  // stays 0 (the empty sum) when K == 0
    }

    for (int64_t k0 = 0; k0 < K; k0 += kKUnroll) {
      raw_t<T, VEC> raw[kKUnroll][S];
#pragma unroll
      for (int u = 0; u < kKUnroll; ++u) {
        const T* vk = vrow + (k0 + u) * D;
#pragma unroll
        for (int s = 0; s < S; ++s) {
          raw[u][s] = raw_t<T, VEC>{};  // defined even when not loaded (no loop-carried registers)
          const int i = t + s * kThreads;
          if (k0 + u < K && i < len) raw[u][s] = load_raw<VEC>(vk + i * VEC);
        }
      }
#pragma unroll
      for (int u = 0; u < kKUnroll; ++u) {
        if (k0 + u < K) {
          const O wk = w[k0 + u];
#pragma unroll
          for (int s = 0; s < S; ++s) {
            O v[VEC];
            unpack<T, VEC>(raw[u][s], v);
#pragma unroll
            for (int j = 0; j < VEC; ++j) {
              const O prod = mul(wk, v[j]);
              // acc = w0 * v0 exactly (keeps -0), then acc + w_k * v_k, each rounded on its own.
              acc[s][j] = (k0 + u == 0) ? prod : add(acc[s][j], prod);
            }
          }
        }
      }
    }

    T* orow = out + (r * nvec + v0) * VEC;
#pragma unroll
    for (int s = 0; s < S; ++s) {
      const int i = t + s * kThreads;
      if (i < len) store_raw<VEC>(orow + i * VEC, pack<T, VEC>(acc[s]));
    }
  }
}

template <typename T, int VEC>
void launch(const T* vertices, const opmath_t<T>* weights, T* out, int64_t N, int64_t K, int64_t P,
            int64_t D, cudaStream_t stream) {
  constexpr int S = slots<T, VEC>();
  const int64_t chunks = ceil_div(D / VEC, static_cast<int64_t>(S) * kThreads);
  simplex_points_kernel<T, VEC, S>
      <<<grid_size(N * P * chunks), kThreads, 0, stream>>>(vertices, weights, out, N, K, P, D, chunks);
}

template <typename T>
cudaError_t simplex_points_typed(const void* vertices_, const void* weights_, void* out_, int64_t N,
                                 int64_t K, int64_t P, int64_t D, cudaStream_t stream) {
  const T* vertices = static_cast<const T*>(vertices_);
  const opmath_t<T>* weights = static_cast<const opmath_t<T>*>(weights_);
  T* out = static_cast<T*>(out_);
  constexpr int V = kVec16<T>;
  // Row starts (multiples of D) stay 16-byte aligned when D is a multiple of the vector width.
  if (D % V == 0 && is_aligned16(vertices) && is_aligned16(out)) {
    launch<T, V>(vertices, weights, out, N, K, P, D, stream);
  } else {
    launch<T, 1>(vertices, weights, out, N, K, P, D, stream);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t simplex_points(DType dtype, const void* vertices, const void* weights, void* out, int64_t N,
                           int64_t K, int64_t P, int64_t D, cudaStream_t stream) {
  if (N == 0 || P == 0 || D == 0) return cudaSuccess;
  switch (dtype) {
    case DType::Float32:
      return simplex_points_typed<float>(vertices, weights, out, N, K, P, D, stream);
    case DType::Float64:
      return simplex_points_typed<double>(vertices, weights, out, N, K, P, D, stream);
    case DType::Float16:
      return simplex_points_typed<__half>(vertices, weights, out, N, K, P, D, stream);
    case DType::BFloat16:
      return simplex_points_typed<__nv_bfloat16>(vertices, weights, out, N, K, P, D, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace lst_fast
