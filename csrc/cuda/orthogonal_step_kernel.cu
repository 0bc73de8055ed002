// Fused LST orthogonal step (semantics in launchers.h).
//
// Regimes, chosen from D alone so that orthogonal_step_workspace(N, D) can size the scratch:
//  * D <= kRowMaxD: one kernel; each row is owned by a group of TPR threads (TPR = 32..512, the smallest
//    power of two whose registers hold the row, several rows per 256-thread block when TPR < 256).
//    The group loads its row (adv included) into registers, reduces gv/gg, and writes adv/out from the
//    registers. Rows too long for the register cache (TPR = 512) stream twice over the row instead,
//    pass 2 re-reading it from L1/L2.
//  * D > kRowMaxD: each row is split into chunks of kChunk elements (larger chunks for rows
//    of over kMaxChunks * kChunk elements). Kernel 1 writes per-(row, chunk) partial (gv, gg) to the workspace;
//    kernel 2 (same chunk grid) sums its row's partials in a fixed order (identical in every block of
//    the row) and then updates its chunk.
// 16-byte vector accesses when all five pointers are 16-byte aligned and D is a multiple of the vector
// width; a scalar path otherwise. Every kernel loops over its logical blocks, so any N fits the grid.
#include "launchers.h"
#include "device_utils.cuh"

namespace lst_fast {
namespace cuda {
namespace {

using namespace detail;

constexpr int64_t kRowMaxD = 8192;   // largest D handled by the one-kernel path
constexpr int64_t kChunk = 4096;     // elements per block in the chunked path (multiple of 8) ...
constexpr int64_t kMaxChunks = 1024; // ... grown in steps of kChunk so a row has at most this many
                                     // chunks (every block of kernel 2 reads all partials of its row)
constexpr int kChunkThreads = 256;   // block size of the chunked kernels
constexpr int kChunkMinBlocks = 4;   // 1024 resident threads per SM -> at most 64 registers
constexpr int kRowBlock = 256;       // block size of the one-kernel path when tpr <= 256

// Blocks per SM the row kernel must fit: 1024 threads per SM, i.e. at most 64 registers per thread.
template <int TPR>
constexpr int kRowMinBlocks = 1024 / (TPR > kRowBlock ? TPR : kRowBlock);

// Scalars converted to opmath once on the host (round-to-nearest, as torch does).
template <typename O>
struct StepParams {
  O step;      // (O)step_size
  O half_adv;  // (O)(adv_step_size / 2)
  O adv;       // (O)adv_step_size
  O neg_adv;   // -(O)adv_step_size
  O lo, hi;
};

// The S-slot working set of one thread: slot s holds vector index i0 + s * stride of the segment.
template <typename T, int VEC, int S>
struct Batch {
  raw_t<T, VEC> x[S], t[S], g[S], a[S];
};

// Segment indices are 32-bit (a segment is at most kRowMaxD elements) and the slot stride is a
// compile-time constant, so each array needs one address register and the slots use immediate offsets.
template <int STRIDE, bool kAdv, typename T, int VEC, int S>
__device__ __forceinline__ void load_batch(Batch<T, VEC, S>& b, const T* x, const T* t, const T* g,
                                           const T* a, int i0, int n) {
#pragma unroll
  for (int s = 0; s < S; ++s) {
    // Define every slot: a slot left untouched by a predicated load would carry the previous loop
    // iteration's registers across the back edge (and spill).
    b.x[s] = b.t[s] = b.g[s] = b.a[s] = raw_t<T, VEC>{};
    const int i = i0 + s * STRIDE;
    if (i < n) {
      b.x[s] = load_raw<VEC>(x + i * VEC);
      b.t[s] = load_raw<VEC>(t + i * VEC);
      b.g[s] = load_raw<VEC>(g + i * VEC);
      if (kAdv) b.a[s] = load_raw<VEC>(a + i * VEC);
    }
  }
}

// gv += (double)g * (double)v, gg += (double)g^2 with v = target - x rounded to opmath.
template <int STRIDE, typename T, int VEC, int S>
__device__ __forceinline__ void accumulate(const Batch<T, VEC, S>& b, int i0, int n, double& gv,
                                           double& gg) {
  using O = opmath_t<T>;
#pragma unroll
  for (int s = 0; s < S; ++s) {
    if (i0 + s * STRIDE < n) {
      O xv[VEC], tv[VEC], gvv[VEC];
      unpack<T, VEC>(b.x[s], xv);
      unpack<T, VEC>(b.t[s], tv);
      unpack<T, VEC>(b.g[s], gvv);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const double gd = static_cast<double>(gvv[j]);
        const double vd = static_cast<double>(sub(tv[j], xv[j]));
        gv = add(gv, mul(gd, vd));
        gg = add(gg, mul(gd, gd));
      }
    }
  }
}

// Elementwise update of a batch; writes adv and out.
template <int STRIDE, typename T, int VEC, int S>
__device__ __forceinline__ void update_store(const Batch<T, VEC, S>& b, T* adv, T* out, int i0, int n,
                                             double coef, const StepParams<opmath_t<T>>& p) {
  using O = opmath_t<T>;
#pragma unroll
  for (int s = 0; s < S; ++s) {
    const int i = i0 + s * STRIDE;
    if (i < n) {
      O xv[VEC], tv[VEC], gvv[VEC], av[VEC], dv[VEC], ov[VEC];
      unpack<T, VEC>(b.x[s], xv);
      unpack<T, VEC>(b.t[s], tv);
      unpack<T, VEC>(b.g[s], gvv);
      unpack<T, VEC>(b.a[s], av);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const O v = sub(tv[j], xv[j]);
        const O vp = from_double<O>(sub(static_cast<double>(v), mul(coef, static_cast<double>(gvv[j]))));
        const O d = clamp(add(av[j], mul(p.half_adv, gvv[j])), p.neg_adv, p.adv);
        dv[j] = d;
        ov[j] = clamp(sub(add(xv[j], mul(p.step, vp)), d), p.lo, p.hi);
      }
      store_raw<VEC>(adv + i * VEC, pack<T, VEC>(dv));
      store_raw<VEC>(out + i * VEC, pack<T, VEC>(ov));
    }
  }
}

template <typename T, int VEC, int S>
__device__ __forceinline__ void opaque_batch(Batch<T, VEC, S>& b) {
#pragma unroll
  for (int s = 0; s < S; ++s) {
    opaque(b.x[s]);
    opaque(b.t[s]);
    opaque(b.g[s]);
    opaque(b.a[s]);
  }
}

__device__ __forceinline__ double make_coef(double gv, double gg) { return gg > 0.0 ? div(gv, gg) : 0.0; }

// ---------------------------------------------------------------------------------------------------
// One-kernel path. A block of max(TPR, 256) threads holds 256 / TPR rows (one when TPR >= 256); each
// row is owned by a group of TPR threads, thread t holding vectors t, t + TPR, ... of the row.
// kCached: the row fits one batch (nvec <= S * TPR), which stays in registers between the two passes.
// Otherwise (only TPR == 512, rows longer than the register cache) both passes stream over the row and
// pass 2 re-reads it (L1/L2 hits); mixing the two would keep the cache live during the streaming loop
// and spill.
// ---------------------------------------------------------------------------------------------------
template <typename T, int VEC, int S, int TPR, bool kCached>
__global__ void __launch_bounds__(TPR > kRowBlock ? TPR : kRowBlock, kRowMinBlocks<TPR>)
    orthogonal_step_rows_kernel(const T* x, const T* target, const T* grad, T* adv, T* out, int64_t N,
                                int64_t D, StepParams<opmath_t<T>> p) {
  constexpr int kRowsPerBlock = TPR > kRowBlock ? 1 : kRowBlock / TPR;
  constexpr int kBatch = S * TPR;
  __shared__ double smem[2 * kMaxWarps];
  const int group = static_cast<int>(threadIdx.x) / TPR;
  const int t = static_cast<int>(threadIdx.x) % TPR;
  const int nvec = static_cast<int>(D / VEC);  // D <= kRowMaxD
  const int64_t nblocks = ceil_div(N, kRowsPerBlock);

  for (int64_t blk = blockIdx.x; blk < nblocks; blk += gridDim.x) {
    const int64_t row = blk * kRowsPerBlock + group;
    // Rows past N still take part in the reduction's barriers but touch no memory.
    const int n = row < N ? nvec : 0;
    const int64_t off = row < N ? row * D : 0;
    const T* xr = x + off;
    const T* tr = target + off;
    const T* gr = grad + off;
    T* ar = adv + off;
    T* orow = out + off;
    double sums[2] = {0.0, 0.0};

    if constexpr (kCached) {
      Batch<T, VEC, S> b;  // adv is loaded now too, so its latency overlaps the reduction
      load_batch<TPR, true>(b, xr, tr, gr, ar, t, n);
      accumulate<TPR>(b, t, n, sums[0], sums[1]);
      group_allreduce(sums, TPR / 32, smem, SumOp());
      const double coef = make_coef(sums[0], sums[1]);
      opaque_batch(b);
      update_store<TPR>(b, ar, orow, t, n, coef, p);
    } else {
      for (int i0 = t; i0 < n; i0 += kBatch) {
        Batch<T, VEC, S> b;
        load_batch<TPR, false>(b, xr, tr, gr, ar, i0, n);
        accumulate<TPR>(b, i0, n, sums[0], sums[1]);
      }
      group_allreduce(sums, TPR / 32, smem, SumOp());
      const double coef = make_coef(sums[0], sums[1]);
      for (int i0 = t; i0 < n; i0 += kBatch) {
        Batch<T, VEC, S> b;
        load_batch<TPR, true>(b, xr, tr, gr, ar, i0, n);
        update_store<TPR>(b, ar, orow, i0, n, coef, p);
      }
    }
  }
}

// Elements per chunk for rows of D elements (a multiple of kChunk).
inline int64_t chunk_elems(int64_t D) { return kChunk * ceil_div(ceil_div(D, kChunk), kMaxChunks); }

// Chunk geometry shared by the two chunked kernels: logical block -> (row, element offset, vectors).
struct ChunkPos {
  int64_t row;
  int64_t off;  // element offset of the chunk in the buffers
  int n;        // vectors in the chunk
};

template <int VEC>
__device__ __forceinline__ ChunkPos chunk_pos(int64_t blk, int64_t D, int64_t chunk, int64_t chunks) {
  ChunkPos c;
  c.row = blk / chunks;
  const int64_t e0 = (blk - c.row * chunks) * chunk;
  const int64_t len = D - e0 < chunk ? D - e0 : chunk;
  c.off = c.row * D + e0;
  c.n = static_cast<int>(len / VEC);  // VEC divides D and chunk on the vector path
  return c;
}

// ---------------------------------------------------------------------------------------------------
// Chunked path, kernel 1: partial (gv, gg) of chunk c of row r into ws[(r * chunks + c) * 2 + {0,1}].
// ---------------------------------------------------------------------------------------------------
template <typename T, int VEC, int S>
__global__ void __launch_bounds__(kChunkThreads, kChunkMinBlocks)
    orthogonal_step_partial_kernel(const T* x, const T* target, const T* grad, double* ws, int64_t N,
                                   int64_t D, int64_t chunk, int64_t chunks) {
  constexpr int kBatch = S * kChunkThreads;
  __shared__ double smem[2 * kMaxWarps];
  const int64_t total = N * chunks;
  const int t = static_cast<int>(threadIdx.x);
  for (int64_t blk = blockIdx.x; blk < total; blk += gridDim.x) {
    const ChunkPos c = chunk_pos<VEC>(blk, D, chunk, chunks);
    double sums[2] = {0.0, 0.0};
    for (int i0 = t; i0 < c.n; i0 += kBatch) {
      Batch<T, VEC, S> b;
      load_batch<kChunkThreads, false>(b, x + c.off, target + c.off, grad + c.off,
                                        static_cast<const T*>(nullptr), i0, c.n);
      accumulate<kChunkThreads>(b, i0, c.n, sums[0], sums[1]);
    }
    group_allreduce(sums, kChunkThreads / 32, smem, SumOp());
    if (t == 0) {
      ws[2 * blk] = sums[0];
      ws[2 * blk + 1] = sums[1];
    }
  }
}

// Chunked path, kernel 2: row totals from the partials, then the elementwise update of the chunk.
template <typename T, int VEC, int S>
__global__ void __launch_bounds__(kChunkThreads, kChunkMinBlocks)
    orthogonal_step_update_kernel(const T* x, const T* target, const T* grad, T* adv, T* out,
                                  const double* ws, int64_t N, int64_t D, int64_t chunk,
                                  int64_t chunks, StepParams<opmath_t<T>> p) {
  constexpr int kBatch = S * kChunkThreads;
  __shared__ double smem[2 * kMaxWarps];
  const int64_t total = N * chunks;
  const int t = static_cast<int>(threadIdx.x);
  for (int64_t blk = blockIdx.x; blk < total; blk += gridDim.x) {
    const ChunkPos c = chunk_pos<VEC>(blk, D, chunk, chunks);
    const T* xr = x + c.off;
    const T* tr = target + c.off;
    const T* gr = grad + c.off;
    T* ar = adv + c.off;
    T* orow = out + c.off;

    // Issue the first batch's loads before the reduction so their latency overlaps it.
    Batch<T, VEC, S> b;
    load_batch<kChunkThreads, true>(b, xr, tr, gr, ar, t, c.n);

    // Same code and data in every block of the row -> bit-identical coef.
    const double* wr = ws + 2 * c.row * chunks;
    double sums[2] = {0.0, 0.0};
    for (int64_t j = t; j < chunks; j += kChunkThreads) {
      sums[0] = add(sums[0], wr[2 * j]);
      sums[1] = add(sums[1], wr[2 * j + 1]);
    }
    group_allreduce(sums, kChunkThreads / 32, smem, SumOp());
    const double coef = make_coef(sums[0], sums[1]);

    update_store<kChunkThreads>(b, ar, orow, t, c.n, coef, p);
    for (int i0 = t + kBatch; i0 < c.n; i0 += kBatch) {
      load_batch<kChunkThreads, true>(b, xr, tr, gr, ar, i0, c.n);
      update_store<kChunkThreads>(b, ar, orow, i0, c.n, coef, p);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------------
template <typename T, int VEC, int S, int TPR, bool kCached = true>
void launch_rows_tpr(const T* x, const T* target, const T* grad, T* adv, T* out, int64_t N, int64_t D,
                     const StepParams<opmath_t<T>>& p, cudaStream_t stream) {
  constexpr int kThreads = TPR > kRowBlock ? TPR : kRowBlock;
  const int64_t blocks = ceil_div(N, kThreads / TPR);
  orthogonal_step_rows_kernel<T, VEC, S, TPR, kCached>
      <<<grid_size(blocks), kThreads, 0, stream>>>(x, target, grad, adv, out, N, D, p);
}

template <typename T, int VEC>
void launch_rows(const T* x, const T* target, const T* grad, T* adv, T* out, int64_t N, int64_t D,
                 const StepParams<opmath_t<T>>& p, cudaStream_t stream) {
  constexpr int S = slots<T, VEC>();
  // Smallest power-of-two group (>= one warp, <= 512) whose registers hold the whole row.
  const int64_t nvec = D / VEC;
  if (nvec <= 32 * S) launch_rows_tpr<T, VEC, S, 32>(x, target, grad, adv, out, N, D, p, stream);
  else if (nvec <= 64 * S) launch_rows_tpr<T, VEC, S, 64>(x, target, grad, adv, out, N, D, p, stream);
  else if (nvec <= 128 * S) launch_rows_tpr<T, VEC, S, 128>(x, target, grad, adv, out, N, D, p, stream);
  else if (nvec <= 256 * S) launch_rows_tpr<T, VEC, S, 256>(x, target, grad, adv, out, N, D, p, stream);
  else if (nvec <= 512 * S) launch_rows_tpr<T, VEC, S, 512>(x, target, grad, adv, out, N, D, p, stream);
  else launch_rows_tpr<T, VEC, S, 512, false>(x, target, grad, adv, out, N, D, p, stream);
}

template <typename T, int VEC>
void launch_chunked(const T* x, const T* target, const T* grad, T* adv, T* out, double* ws, int64_t N,
                    int64_t D, const StepParams<opmath_t<T>>& p, cudaStream_t stream) {
  constexpr int S = slots<T, VEC>();
  const int64_t chunk = chunk_elems(D);
  const int64_t chunks = ceil_div(D, chunk);
  const unsigned grid = grid_size(N * chunks);
  orthogonal_step_partial_kernel<T, VEC, S>
      <<<grid, kChunkThreads, 0, stream>>>(x, target, grad, ws, N, D, chunk, chunks);
  orthogonal_step_update_kernel<T, VEC, S>
      <<<grid, kChunkThreads, 0, stream>>>(x, target, grad, adv, out, ws, N, D, chunk, chunks, p);
}

template <typename T>
cudaError_t orthogonal_step_typed(const void* x_, const void* target_, const void* grad_, void* adv_,
                                  void* out_, double* ws, int64_t N, int64_t D, double step_size,
                                  double adv_step_size, double lo, double hi, cudaStream_t stream) {
  using O = opmath_t<T>;
  const StepParams<O> p{static_cast<O>(step_size), static_cast<O>(adv_step_size / 2),
                        static_cast<O>(adv_step_size), -static_cast<O>(adv_step_size),
                        static_cast<O>(lo), static_cast<O>(hi)};
  const T* x = static_cast<const T*>(x_);
  const T* target = static_cast<const T*>(target_);
  const T* grad = static_cast<const T*>(grad_);
  T* adv = static_cast<T*>(adv_);
  T* out = static_cast<T*>(out_);

  constexpr int V = kVec16<T>;
  // 16-byte path: every row start (n * D) and every chunk start (multiple of kChunk) is then aligned.
  const bool vec = D % V == 0 && is_aligned16(x) && is_aligned16(target) && is_aligned16(grad) &&
                   is_aligned16(adv) && is_aligned16(out);
  if (D <= kRowMaxD) {
    if (vec) launch_rows<T, V>(x, target, grad, adv, out, N, D, p, stream);
    else launch_rows<T, 1>(x, target, grad, adv, out, N, D, p, stream);
  } else {
    if (vec) launch_chunked<T, V>(x, target, grad, adv, out, ws, N, D, p, stream);
    else launch_chunked<T, 1>(x, target, grad, adv, out, ws, N, D, p, stream);
  }
  return cudaGetLastError();
}

}  // namespace

int64_t orthogonal_step_workspace(int64_t N, int64_t D) {
  if (N <= 0 || D <= kRowMaxD) return 0;
  return 2 * N * detail::ceil_div(D, chunk_elems(D));
}

cudaError_t orthogonal_step(DType dtype, const void* x, const void* target, const void* grad, void* adv,
                            void* out, double* workspace, int64_t N, int64_t D, double step_size,
                            double adv_step_size, double lo, double hi, cudaStream_t stream) {
  if (N == 0 || D == 0) return cudaSuccess;
  switch (dtype) {
    case DType::Float32:
      return orthogonal_step_typed<float>(x, target, grad, adv, out, workspace, N, D, step_size,
                                          adv_step_size, lo, hi, stream);
    case DType::Float64:
      return orthogonal_step_typed<double>(x, target, grad, adv, out, workspace, N, D, step_size,
                                           adv_step_size, lo, hi, stream);
    case DType::Float16:
      return orthogonal_step_typed<__half>(x, target, grad, adv, out, workspace, N, D, step_size,
                                           adv_step_size, lo, hi, stream);
    case DType::BFloat16:
      return orthogonal_step_typed<__nv_bfloat16>(x, target, grad, adv, out, workspace, N, D, step_size,
                                                  adv_step_size, lo, hi, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace lst_fast
