// Memory-safety guards and layout helpers shared by the CPU and CUDA kernels, on the LibTorch stable ABI
// (torch/csrc/stable, torch/headeronly) only. The argument contract of the operators (what is accepted,
// and the message that names the argument otherwise) is not here: it is written once, in
// lst_fast/backends/op_checks.py, and runs before every call of the public ops torch.ops.lst_fast.*, which then
// call these kernels (torch.ops.lst_fast_kernels.*). A kernel called directly only refuses, tersely, the
// arguments that would take it outside its tensors' memory. The few things the stable API lacks (an
// opmath type, a dtype switch, the non-overlapping-and-dense test) are small helpers here.
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace lst_fast {

using Tensor = torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;
using DeviceType = torch::headeronly::DeviceType;

// Our checks build their messages from strings alone and throw them as std::runtime_error (what
// STD_TORCH_CHECK throws, and what torch turns into a Python RuntimeError). We do not go through
// STD_TORCH_CHECK's own message builder: it streams __LINE__ into a std::ostringstream, and streaming a
// number inside this library crashed on one GPU machine (torch 2.11 built there with GCC 13, whose C++
// runtime pieces in this library did not match the one loaded with torch). std::to_string and snprintf
// do not touch streams or locales. A number or torch type passed to LST_CHECK does not compile.
inline void append(std::string& s, const char* piece) { s += piece; }
inline void append(std::string& s, const std::string& piece) { s += piece; }

template <typename... Pieces>
std::string message(const Pieces&... pieces) {
  std::string s;
  (append(s, pieces), ...);
  return s;
}

#define LST_CHECK(cond, ...)                                   \
  do {                                                         \
    if (!(cond)) {                                             \
      throw std::runtime_error(::lst_fast::message(__VA_ARGS__)); \
    }                                                          \
  } while (0)

template <typename T>
inline std::string num_str(T v) {
  if constexpr (std::is_integral_v<T>) {
    return std::to_string(v);
  } else {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.9g", static_cast<double>(v));
    return buf;
  }
}

// ---- types ------------------------------------------------------------------------------------------

// The arithmetic type of a storage type, as at::opmath_type: float for half, bfloat16 and float.
template <typename T>
struct OpMath {
  using type = T;
};
template <>
struct OpMath<torch::headeronly::Half> {
  using type = float;
};
template <>
struct OpMath<torch::headeronly::BFloat16> {
  using type = float;
};
template <typename T>
using opmath_t = typename OpMath<T>::type;

inline bool is_supported_float(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Double || t == ScalarType::Half || t == ScalarType::BFloat16;
}

// Calls f(T{}) with T the C++ type of one of the four floating dtypes (the AT_DISPATCH_FLOATING_TYPES_AND2
// of the unstable API). Callers have checked the dtype already.
template <typename F>
decltype(auto) dispatch_float(ScalarType t, const char* op, F&& f) {
  switch (t) {
    case ScalarType::Float: return f(float{});
    case ScalarType::Double: return f(double{});
    case ScalarType::Half: return f(torch::headeronly::Half{});
    case ScalarType::BFloat16: return f(torch::headeronly::BFloat16{});
    default: break;
  }
  throw std::runtime_error(message(op, ": unsupported dtype ", torch::headeronly::toString(t)));
}

// ---- layout -----------------------------------------------------------------------------------------

inline bool same_sizes(const Tensor& a, const Tensor& b) {
  if (a.dim() != b.dim()) return false;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) != b.size(d)) return false;
  }
  return true;
}
// Equal strides in every dimension of size > 1: a dimension of size 1 is never stepped along, so its
// stride does not change where any element lies ((N, 1, H, W) contiguous and channels-last are one
// layout in memory). Call only on tensors of the same sizes.
inline bool same_strides_where_stepped(const Tensor& a, const Tensor& b) {
  if (a.dim() != b.dim()) return false;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

// c10's is_non_overlapping_and_dense: some permutation of the dimensions of size >= 2, ordered by
// stride, is contiguous.
inline bool is_non_overlapping_and_dense(const Tensor& t) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size) of the dimensions of size >= 2
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) >= 2) dims.emplace_back(t.stride(d), t.size(d));
  }
  std::stable_sort(dims.begin(), dims.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  int64_t expected = 1;
  for (const auto& [stride, size] : dims) {
    if (stride != expected) return false;
    expected *= size;
  }
  return true;
}

// True when every tensor has the same sizes and strides (where the size is above 1), its memory is non-overlapping and dense, and
// the batch dimension is outermost. Then sample n is one dense block of D = numel / N elements at
// offset n * D (NCHW contiguous and channels-last both qualify), and the kernels can walk raw memory.
inline bool rows_share_dense_layout(const std::vector<Tensor>& tensors) {
  const Tensor& ref = tensors.front();
  if (!is_non_overlapping_and_dense(ref)) return false;
  if (ref.dim() > 0 && ref.size(0) > 1 && ref.stride(0) * ref.size(0) != ref.numel()) return false;
  for (const Tensor& t : tensors) {
    if (!same_sizes(t, ref) || !same_strides_where_stepped(t, ref)) return false;
  }
  return true;
}

// The tensors as the kernels see them: the caller's own when they all share one row-dense layout,
// contiguous copies otherwise. The last `write_only` tensors are outputs the kernel only writes: in the
// fallback they get an empty contiguous buffer, since copying their (uninitialised) values would be a
// wasted read and write, and a read of uninitialised memory. write_back(i) copies a result back to the
// caller's tensor.
class RowDenseViews {
 public:
  explicit RowDenseViews(std::vector<Tensor> tensors, size_t write_only = 0)
      : original_(std::move(tensors)), direct_(rows_share_dense_layout(original_)) {
    const size_t first_output = original_.size() - std::min(write_only, original_.size());
    for (size_t i = 0; i < original_.size(); ++i) {
      const Tensor& t = original_[i];
      if (direct_) {
        work_.push_back(t);
      } else if (i >= first_output) {
        std::vector<int64_t> sizes(static_cast<size_t>(t.dim()));
        for (int64_t d = 0; d < t.dim(); ++d) sizes[static_cast<size_t>(d)] = t.size(d);
        work_.push_back(torch::stable::new_empty(t, sizes, t.scalar_type()));  // contiguous
      } else {
        work_.push_back(torch::stable::contiguous(t));
      }
    }
  }
  const Tensor& operator[](size_t i) const { return work_[i]; }
  void write_back(size_t i) {
    if (work_[i].data_ptr() != original_[i].data_ptr()) torch::stable::copy_(original_[i], work_[i]);
  }

 private:
  std::vector<Tensor> original_;
  bool direct_;
  std::vector<Tensor> work_;
};

// ---- memory-safety guards ---------------------------------------------------------------------------
// What each kernel needs to stay inside its tensors: ranks, sizes, element types, one device. Scalars,
// aliasing and the exact message are lst_fast/backends/op_checks.py's business (a NaN step or an aliased output
// gives wrong numbers, never a wrong address).

inline void refuse_unless(bool ok, const char* name) {
  LST_CHECK(ok, "lst_fast_kernels::", name, ": arguments this kernel cannot run on (shapes, dtypes or devices); ",
            "call torch.ops.lst_fast.", name, ", which names the argument");
}

// t has ref's dtype, sizes and device.
inline bool like(const Tensor& t, const Tensor& ref) {
  return t.scalar_type() == ref.scalar_type() && same_sizes(t, ref) && t.device() == ref.device();
}

// t is 1-D with n elements of one of the dtypes, on ref's device.
inline bool vector_of(const Tensor& t, int64_t n, std::initializer_list<ScalarType> dtypes, const Tensor& ref) {
  return t.dim() == 1 && t.size(0) == n && t.device() == ref.device() &&
         std::find(dtypes.begin(), dtypes.end(), t.scalar_type()) != dtypes.end();
}

// x is a batch of one of the float dtypes on a device of `type`.
inline bool float_batch_on(const Tensor& x, DeviceType type) {
  return x.dim() >= 1 && is_supported_float(x.scalar_type()) && x.device().type() == type;
}

inline void guard_orthogonal_step(const Tensor& x, const Tensor& target, const Tensor& grad, const Tensor& adv,
                                  DeviceType type) {
  refuse_unless(float_batch_on(x, type) && like(target, x) && like(grad, x) && like(adv, x), "orthogonal_step");
}

inline void guard_confidence_accept(const Tensor& logits, const Tensor& label, const Tensor& p0, const Tensor& x,
                                    const Tensor& candidate, const Tensor& grad, const Tensor& candidate_grad,
                                    const Tensor& confidence, DeviceType type) {
  const bool rows = float_batch_on(x, type) && like(candidate, x) && like(grad, x) && like(candidate_grad, x);
  const int64_t n = rows ? x.size(0) : 0;
  const bool logits_ok = logits.dim() == 2 && logits.size(0) == n && logits.size(1) >= 1 &&
                         is_supported_float(logits.scalar_type()) && logits.device() == x.device();
  refuse_unless(rows && logits_ok && vector_of(label, n, {ScalarType::Long}, x) &&
                    vector_of(p0, n, {ScalarType::Float, ScalarType::Double}, x) && like(confidence, p0),
                "confidence_accept");
}

inline void guard_simplex_points(const Tensor& vertices, const Tensor& weights, DeviceType type) {
  refuse_unless(vertices.dim() >= 2 && vertices.size(1) >= 1 && is_supported_float(vertices.scalar_type()) &&
                    vertices.device().type() == type && weights.dim() == 2 &&
                    weights.size(1) == vertices.size(1) && weights.device() == vertices.device(),
                "simplex_points");
}

// ---- shared pieces of the kernels' set-up -----------------------------------------------------------

// Output shape of simplex_points: (N * P, *vertices.shape[2:]).
inline std::vector<int64_t> simplex_points_shape(const Tensor& vertices, const Tensor& weights) {
  std::vector<int64_t> shape{vertices.size(0) * weights.size(0)};
  for (int64_t d = 2; d < vertices.dim(); ++d) shape.push_back(vertices.size(d));
  return shape;
}

// Weights in the kernels' arithmetic type: float for reduced and single precision, double for double.
inline Tensor simplex_weights_in_opmath(const Tensor& vertices, const Tensor& weights) {
  const ScalarType opmath = vertices.scalar_type() == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
  return torch::stable::contiguous(torch::stable::to(weights, opmath));
}

// A new tensor of `sizes` and `dtype` on `like`'s device.
inline Tensor new_tensor(const Tensor& like, const std::vector<int64_t>& sizes, ScalarType dtype) {
  return torch::stable::new_empty(like, sizes, dtype);
}

}  // namespace lst_fast
