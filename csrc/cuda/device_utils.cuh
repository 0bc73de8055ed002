// Device helpers shared by the lst_fast kernels. No torch headers here (see launchers.h).
#pragma once

#include <cstdint>
#include <cmath>
#include <type_traits>

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <math_constants.h>

namespace lst_fast {
namespace cuda {
namespace detail {

// ---------------------------------------------------------------------------------------------------
// Rounding-explicit arithmetic. The _rn intrinsics are never contracted into FMA, so every operation
// rounds on its own exactly like the eager PyTorch reference.
// ---------------------------------------------------------------------------------------------------
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double div(double a, double b) { return __ddiv_rn(a, b); }

// torch.clamp semantics: a NaN input passes through (NaN compares false), and lo > hi yields hi
// (min(max(v, lo), hi)). Identical to `v < lo ? lo : (v > hi ? hi : v)` whenever lo <= hi.
template <typename O>
__device__ __forceinline__ O clamp(O v, O lo, O hi) {
  const O r = v < lo ? lo : v;
  return r > hi ? hi : r;
}

// double -> opmath with round-to-nearest (identity for double).
template <typename O>
__device__ __forceinline__ O from_double(double v);
template <>
__device__ __forceinline__ float from_double<float>(double v) { return __double2float_rn(v); }
template <>
__device__ __forceinline__ double from_double<double>(double v) { return v; }

// ---------------------------------------------------------------------------------------------------
// Storage types: opmath type, raw bit type, and bit <-> opmath conversions.
// ---------------------------------------------------------------------------------------------------
template <typename T>
struct TypeInfo;

template <>
struct TypeInfo<float> {
  using opmath = float;
  using bits = uint32_t;
  static __device__ __forceinline__ float to_op(bits b) { return __uint_as_float(b); }
  static __device__ __forceinline__ bits from_op(float v) { return __float_as_uint(v); }
};

template <>
struct TypeInfo<double> {
  using opmath = double;
  using bits = unsigned long long;
  static __device__ __forceinline__ double to_op(bits b) {
    return __longlong_as_double(static_cast<long long>(b));
  }
  static __device__ __forceinline__ bits from_op(double v) {
    return static_cast<bits>(__double_as_longlong(v));
  }
};

template <>
struct TypeInfo<__half> {
  using opmath = float;
  using bits = unsigned short;
  static __device__ __forceinline__ float to_op(bits b) { return __half2float(__ushort_as_half(b)); }
  static __device__ __forceinline__ bits from_op(float v) { return __half_as_ushort(__float2half_rn(v)); }
};

template <>
struct TypeInfo<__nv_bfloat16> {
  using opmath = float;
  using bits = unsigned short;
  static __device__ __forceinline__ float to_op(bits b) {
    return __bfloat162float(__ushort_as_bfloat16(b));
  }
  static __device__ __forceinline__ bits from_op(float v) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  }
};

template <typename T>
using opmath_t = typename TypeInfo<T>::opmath;

// Elements of T per 16-byte vector.
template <typename T>
constexpr int kVec16 = static_cast<int>(16 / sizeof(T));

// Register slots (vectors, or scalars on the fallback path) per thread and array: 8 elements per thread
// (4 for double vectors), so a kernel's working set stays within the 64-register budget of 1024
// resident threads per SM without spilling.
template <typename T, int VEC>
constexpr int slots() {
  return VEC > 1 ? (sizeof(T) == 2 ? 1 : 2) : (sizeof(T) == 8 ? 4 : 8);
}

// ---------------------------------------------------------------------------------------------------
// Raw loads/stores of VEC consecutive elements: VEC == 1 is one scalar, VEC == kVec16<T> is one
// 16-byte access (ld/st.global.v4.u32; the pointer must be 16-byte aligned). Data stays raw in
// registers until unpacked, so caching a half row costs half the registers of caching floats.
// ---------------------------------------------------------------------------------------------------
template <typename T, int VEC>
using raw_t = std::conditional_t<VEC == 1, typename TypeInfo<T>::bits, uint4>;

template <int VEC, typename T>
__device__ __forceinline__ raw_t<T, VEC> load_raw(const T* p) {
  static_assert(VEC == 1 || VEC == kVec16<T>, "VEC must be 1 or one 16-byte vector");
  return *reinterpret_cast<const raw_t<T, VEC>*>(p);
}

template <int VEC, typename T>
__device__ __forceinline__ void store_raw(T* p, raw_t<T, VEC> r) {
  static_assert(VEC == 1 || VEC == kVec16<T>, "VEC must be 1 or one 16-byte vector");
  *reinterpret_cast<raw_t<T, VEC>*>(p) = r;
}

// Hides a register's value from the optimizer (emits no instruction). Used on data cached across a
// reduction so the compiler recomputes from the raw bits afterwards instead of keeping derived values
// (doubles, partial results) alive across the barrier, which would double the register footprint.
__device__ __forceinline__ void opaque(uint4& u) {
  asm volatile("" : "+r"(u.x), "+r"(u.y), "+r"(u.z), "+r"(u.w));
}
__device__ __forceinline__ void opaque(uint32_t& v) { asm volatile("" : "+r"(v)); }
__device__ __forceinline__ void opaque(unsigned long long& v) { asm volatile("" : "+l"(v)); }
__device__ __forceinline__ void opaque(unsigned short& v) { asm volatile("" : "+h"(v)); }

// Word i of a uint4 (i is a compile-time constant after unrolling, so this folds to a register).
__device__ __forceinline__ uint32_t word(const uint4& u, int i) {
  return i == 0 ? u.x : (i == 1 ? u.y : (i == 2 ? u.z : u.w));
}
__device__ __forceinline__ void set_word(uint4& u, int i, uint32_t w) {
  if (i == 0) u.x = w;
  else if (i == 1) u.y = w;
  else if (i == 2) u.z = w;
  else u.w = w;
}

// Raw bits of element j of a 16-byte vector (little-endian: lower address = lower bits).
template <typename T>
__device__ __forceinline__ typename TypeInfo<T>::bits lane_bits(const uint4& u, int j) {
  using B = typename TypeInfo<T>::bits;
  if constexpr (sizeof(T) == 4) {
    return word(u, j);
  } else if constexpr (sizeof(T) == 8) {
    return (static_cast<B>(word(u, 2 * j + 1)) << 32) | static_cast<B>(word(u, 2 * j));
  } else {
    static_assert(sizeof(T) == 2, "unsupported element size");
    return static_cast<B>(word(u, j >> 1) >> ((j & 1) * 16));
  }
}

// raw -> opmath[VEC]
template <typename T, int VEC>
__device__ __forceinline__ void unpack(const raw_t<T, VEC>& r, opmath_t<T> (&v)[VEC]) {
  if constexpr (VEC == 1) {
    v[0] = TypeInfo<T>::to_op(r);
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) v[j] = TypeInfo<T>::to_op(lane_bits<T>(r, j));
  }
}

// opmath[VEC] -> raw (each element rounded to T on its own)
template <typename T, int VEC>
__device__ __forceinline__ raw_t<T, VEC> pack(const opmath_t<T> (&v)[VEC]) {
  if constexpr (VEC == 1) {
    return TypeInfo<T>::from_op(v[0]);
  } else {
    uint4 u = make_uint4(0u, 0u, 0u, 0u);
    if constexpr (sizeof(T) == 4) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) set_word(u, j, static_cast<uint32_t>(TypeInfo<T>::from_op(v[j])));
    } else if constexpr (sizeof(T) == 8) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const unsigned long long b = TypeInfo<T>::from_op(v[j]);
        set_word(u, 2 * j, static_cast<uint32_t>(b));
        set_word(u, 2 * j + 1, static_cast<uint32_t>(b >> 32));
      }
    } else {
#pragma unroll
      for (int j = 0; j < VEC; j += 2) {
        const uint32_t lo = TypeInfo<T>::from_op(v[j]);
        const uint32_t hi = TypeInfo<T>::from_op(v[j + 1]);
        set_word(u, j >> 1, lo | (hi << 16));
      }
    }
    return u;
  }
}

// ---------------------------------------------------------------------------------------------------
// Deterministic reductions in double. A warp uses an xor butterfly: with a commutative op every lane
// ends with the same bits. Across warps, lane 0 of each warp publishes to shared memory and every
// thread folds its group's warp values in ascending warp order, so all threads of a group (and all
// blocks running the same code on the same data) get identical bits.
// ---------------------------------------------------------------------------------------------------
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kMaxWarps = 32;

struct SumOp {
  __device__ __forceinline__ double operator()(double a, double b) const { return __dadd_rn(a, b); }
};

// max that propagates NaN (like torch.max).
struct MaxOp {
  __device__ __forceinline__ double operator()(double a, double b) const {
    return (a > b || isnan(a)) ? a : b;
  }
};

// All-reduce NV values over groups of `group_warps` consecutive warps (group_warps must be uniform
// over the block and divide the number of warps). smem must hold NV * kMaxWarps doubles. Every thread
// of the block must call this (it contains __syncthreads when group_warps > 1).
template <int NV, typename Op>
__device__ __forceinline__ void group_allreduce(double (&v)[NV], int group_warps, double* smem, Op op) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
#pragma unroll
    for (int j = 0; j < NV; ++j) v[j] = op(v[j], __shfl_xor_sync(kFullMask, v[j], offset));
  }
  if (group_warps > 1) {
    const int warp = static_cast<int>(threadIdx.x >> 5);
    if ((threadIdx.x & 31) == 0) {
#pragma unroll
      for (int j = 0; j < NV; ++j) smem[j * kMaxWarps + warp] = v[j];
    }
    __syncthreads();
    const int first = warp - warp % group_warps;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      double r = smem[j * kMaxWarps + first];
      for (int w = 1; w < group_warps; ++w) r = op(r, smem[j * kMaxWarps + first + w]);
      v[j] = r;
    }
    __syncthreads();  // smem is reused by the next call
  }
}

// ---------------------------------------------------------------------------------------------------
// Host-side launch helpers.
// ---------------------------------------------------------------------------------------------------
inline bool is_aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Kernels loop over their logical blocks, so the grid can be capped at the x-dimension limit.
inline unsigned grid_size(int64_t blocks) {
  const int64_t kMaxGrid = 2147483647;  // 2^31 - 1
  return static_cast<unsigned>(blocks < kMaxGrid ? blocks : kMaxGrid);
}

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace detail
}  // namespace cuda
}  // namespace lst_fast
