// Confidence-constrained accept (semantics in launchers.h).
//
// Grid: one logical block per (row, chunk of kChunkBytes bytes of the row). Every block of row n
// recomputes the softmax probability of the label from the row's K logits with the same code and the
// same thread mapping, so all blocks of the row reach the same decision bit for bit; the chunk-0 block
// writes accepted[n] / confidence[n], and on acceptance each block copies its chunk of candidate -> x and
// candidate_grad -> grad (16-byte, 4-byte or 1-byte units, whatever the pointers and row_bytes allow).
#include "launchers.h"
#include "device_utils.cuh"

namespace lst_fast {
namespace cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kChunkBytes = 16384;  // 256 threads x 4 slots x 16 bytes
constexpr int kCopySlots = 4;

// p = exp(l_c - m) / sum_k exp(l_k - m) in double (NaN when c is outside [0, K)). Called by the whole
// block; every thread returns the same bits.
template <typename L>
__device__ __forceinline__ double label_probability(const L* lr, int64_t K, int64_t c, double* smem) {
  double m[1] = {-CUDART_INF};
  for (int64_t k = threadIdx.x; k < K; k += kThreads) m[0] = MaxOp()(m[0], static_cast<double>(lr[k]));
  group_allreduce(m, kWarps, smem, MaxOp());

  double s[1] = {0.0};
#pragma unroll 1  // unrolling makes ptxas spill around exp's rare-case branches
  for (int64_t k = threadIdx.x; k < K; k += kThreads) {
    s[0] = add(s[0], exp(sub(static_cast<double>(lr[k]), m[0])));
  }
  group_allreduce(s, kWarps, smem, SumOp());

  if (c < 0 || c >= K) return CUDART_NAN;
  return div(exp(sub(static_cast<double>(lr[c]), m[0])), s[0]);
}

// Copies units [0, n) of src to dst; thread t moves t, t + kThreads, ... with kCopySlots loads in flight.
template <typename U>
__device__ __forceinline__ void copy_units(U* dst, const U* src, int n) {
  for (int i0 = static_cast<int>(threadIdx.x); i0 < n; i0 += kCopySlots * kThreads) {
    U r[kCopySlots];
#pragma unroll
    for (int s = 0; s < kCopySlots; ++s) {
      r[s] = U{};
      if (i0 + s * kThreads < n) r[s] = src[i0 + s * kThreads];
    }
#pragma unroll
    for (int s = 0; s < kCopySlots; ++s) {
      if (i0 + s * kThreads < n) dst[i0 + s * kThreads] = r[s];
    }
  }
}

// L: logits type, C: p0/confidence type, U: copy unit (uint4, uint32_t or uint8_t).
template <typename L, typename C, typename U>
__global__ void __launch_bounds__(kThreads)
    confidence_accept_kernel(const L* logits, int64_t K, const int64_t* label, const C* p0, C* confidence,
                             double threshold, U* x, const U* candidate, U* grad, const U* candidate_grad,
                             int64_t row_units, int64_t chunk_units, int64_t chunks, bool* accepted,
                             int64_t N) {
  __shared__ double smem[kMaxWarps];
  const int64_t total = N * chunks;
  for (int64_t blk = blockIdx.x; blk < total; blk += gridDim.x) {
    const int64_t row = blk / chunks;
    const int64_t chunk = blk - row * chunks;

    const double p = label_probability(logits + row * K, K, label[row], smem);
    const bool acc = sub(static_cast<double>(p0[row]), p) < threshold;  // false for NaN p

    if (chunk == 0 && threadIdx.x == 0) {
      accepted[row] = acc;
      if (acc) confidence[row] = from_double<C>(p);
    }
    if (acc) {  // uniform over the block
      const int64_t u0 = chunk * chunk_units;
      const int64_t left = row_units - u0;
      const int n = static_cast<int>(left < chunk_units ? left : chunk_units);
      const int64_t off = row * row_units + u0;
      copy_units(x + off, candidate + off, n);
      copy_units(grad + off, candidate_grad + off, n);
    }
  }
}

template <typename L, typename C, typename U>
void launch(const void* logits, int64_t K, const int64_t* label, const void* p0, void* confidence,
            double threshold, void* x, const void* candidate, void* grad, const void* candidate_grad,
            int64_t row_bytes, bool* accepted, int64_t N, cudaStream_t stream) {
  const int64_t row_units = row_bytes / static_cast<int64_t>(sizeof(U));
  const int64_t chunk_units = kChunkBytes / static_cast<int64_t>(sizeof(U));
  // At least one block per row, so the decision is written even when row_bytes == 0.
  const int64_t chunks = row_units > 0 ? ceil_div(row_units, chunk_units) : 1;
  confidence_accept_kernel<L, C, U><<<grid_size(N * chunks), kThreads, 0, stream>>>(
      static_cast<const L*>(logits), K, label, static_cast<const C*>(p0), static_cast<C*>(confidence),
      threshold, static_cast<U*>(x), static_cast<const U*>(candidate), static_cast<U*>(grad),
      static_cast<const U*>(candidate_grad), row_units, chunk_units, chunks, accepted, N);
}

template <typename L, typename C>
void launch_units(const void* logits, int64_t K, const int64_t* label, const void* p0, void* confidence,
                  double threshold, void* x, const void* candidate, void* grad, const void* candidate_grad,
                  int64_t row_bytes, bool* accepted, int64_t N, cudaStream_t stream) {
  const uintptr_t addr_bits = reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(candidate) |
                              reinterpret_cast<uintptr_t>(grad) |
                              reinterpret_cast<uintptr_t>(candidate_grad);
  // Every row start n * row_bytes stays aligned when row_bytes is a multiple of the unit.
  const uintptr_t bits = addr_bits | static_cast<uintptr_t>(row_bytes);
  if ((bits & 15u) == 0) {
    launch<L, C, uint4>(logits, K, label, p0, confidence, threshold, x, candidate, grad, candidate_grad,
                        row_bytes, accepted, N, stream);
  } else if ((bits & 3u) == 0) {
    launch<L, C, uint32_t>(logits, K, label, p0, confidence, threshold, x, candidate, grad,
                           candidate_grad, row_bytes, accepted, N, stream);
  } else {
    launch<L, C, uint8_t>(logits, K, label, p0, confidence, threshold, x, candidate, grad, candidate_grad,
                          row_bytes, accepted, N, stream);
  }
}

template <typename L>
void launch_conf(DType conf_dtype, const void* logits, int64_t K, const int64_t* label, const void* p0,
                 void* confidence, double threshold, void* x, const void* candidate, void* grad,
                 const void* candidate_grad, int64_t row_bytes, bool* accepted, int64_t N,
                 cudaStream_t stream) {
  if (conf_dtype == DType::Float64) {
    launch_units<L, double>(logits, K, label, p0, confidence, threshold, x, candidate, grad,
                            candidate_grad, row_bytes, accepted, N, stream);
  } else {
    launch_units<L, float>(logits, K, label, p0, confidence, threshold, x, candidate, grad,
                           candidate_grad, row_bytes, accepted, N, stream);
  }
}

}  // namespace

cudaError_t confidence_accept(DType logits_dtype, const void* logits, int64_t K, const int64_t* label,
                              DType conf_dtype, const void* p0, void* confidence, double threshold,
                              void* x, const void* candidate, void* grad, const void* candidate_grad,
                              int64_t row_bytes, bool* accepted, int64_t N, cudaStream_t stream) {
  if (N == 0) return cudaSuccess;
  if ((logits_dtype != DType::Float32 && logits_dtype != DType::Float64) ||
      (conf_dtype != DType::Float32 && conf_dtype != DType::Float64)) {
    return cudaErrorInvalidValue;
  }
  if (logits_dtype == DType::Float64) {
    launch_conf<double>(conf_dtype, logits, K, label, p0, confidence, threshold, x, candidate, grad,
                        candidate_grad, row_bytes, accepted, N, stream);
  } else {
    launch_conf<float>(conf_dtype, logits, K, label, p0, confidence, threshold, x, candidate, grad,
                       candidate_grad, row_bytes, accepted, N, stream);
  }
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace lst_fast
