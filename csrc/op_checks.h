// Argument checks and layout helpers shared by the CPU and CUDA registrations, on the LibTorch stable ABI
// (torch/csrc/stable, torch/headeronly) only. Header-only so that both backends give the same error
// messages for the same mistakes. The few things the stable API lacks (an opmath type, a dtype switch,
// the non-overlapping-and-dense test, the overlap checks) are small helpers here.
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

// ---- descriptions for messages ----------------------------------------------------------------------

inline std::string shape_str(const Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}
inline const char* dtype_str(const Tensor& t) { return torch::headeronly::toString(t.scalar_type()); }
inline std::string device_type_str(DeviceType type) {
  switch (type) {
    case DeviceType::CPU: return "cpu";
    case DeviceType::CUDA: return "cuda";
    case DeviceType::Meta: return "meta";
    default: return "device type " + std::to_string(static_cast<int>(type));
  }
}
inline std::string device_str(const Tensor& t) {
  const auto device = t.device();
  std::string s = device_type_str(device.type());
  if (device.has_index()) s += ":" + std::to_string(device.index());
  return s;
}

// ---- layout -----------------------------------------------------------------------------------------

inline bool same_sizes(const Tensor& a, const Tensor& b) {
  if (a.dim() != b.dim()) return false;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) != b.size(d)) return false;
  }
  return true;
}
inline bool same_strides(const Tensor& a, const Tensor& b) {
  if (a.dim() != b.dim()) return false;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.stride(d) != b.stride(d)) return false;
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

// As at::assert_no_internal_overlap: a dimension of size >= 2 with stride 0 writes one element twice.
// (Other overlapping layouts are "too hard" to decide there too, and pass.)
inline void check_no_internal_overlap(const Tensor& t, const char* name, const char* op) {
  for (int64_t d = 0; d < t.dim(); ++d) {
    LST_CHECK(!(t.size(d) >= 2 && t.stride(d) == 0), op, ": ", name,
              " has internal overlap (more than one element refers to a single memory location); pass a "
              "tensor that owns its memory, e.g. ", name, ".clone()");
  }
}

// As at::assert_no_overlap: two non-overlapping-and-dense tensors whose memory ranges intersect (the
// same tensor twice included). Strided layouts are "too hard" there too, and pass.
inline void check_no_overlap(const Tensor& written, const char* written_name, const Tensor& other,
                             const char* other_name, const char* op) {
  if (written.numel() == 0 || other.numel() == 0) return;
  if (!is_non_overlapping_and_dense(written) || !is_non_overlapping_and_dense(other)) return;
  const auto* a = static_cast<const char*>(written.data_ptr());
  const auto* b = static_cast<const char*>(other.data_ptr());
  const auto* a_end = a + written.numel() * static_cast<int64_t>(written.element_size());
  const auto* b_end = b + other.numel() * static_cast<int64_t>(other.element_size());
  LST_CHECK(!(a < b_end && b < a_end), op, ": ", written_name, " and ", other_name,
            " overlap (some elements refer to the same memory location); ", written_name,
            " is written, so pass a separate tensor, e.g. ", written_name, ".clone()");
}

// True when every tensor has the same sizes and strides, its memory is non-overlapping and dense, and
// the batch dimension is outermost. Then sample n is one dense block of D = numel / N elements at
// offset n * D (NCHW contiguous and channels-last both qualify), and the kernels can walk raw memory.
inline bool rows_share_dense_layout(const std::vector<Tensor>& tensors) {
  const Tensor& ref = tensors.front();
  if (!is_non_overlapping_and_dense(ref)) return false;
  if (ref.dim() > 0 && ref.size(0) > 1 && ref.stride(0) * ref.size(0) != ref.numel()) return false;
  for (const Tensor& t : tensors) {
    if (!same_sizes(t, ref) || !same_strides(t, ref)) return false;
  }
  return true;
}

// The tensors as the kernels see them: the caller's own when they all share one row-dense layout,
// contiguous copies otherwise. write_back(i) copies an in-place result back to the caller's tensor.
class RowDenseViews {
 public:
  explicit RowDenseViews(std::vector<Tensor> tensors)
      : original_(std::move(tensors)), direct_(rows_share_dense_layout(original_)) {
    for (const Tensor& t : original_) work_.push_back(direct_ ? t : torch::stable::contiguous(t));
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

// ---- argument checks --------------------------------------------------------------------------------

inline void check_data_tensor(const Tensor& t, const char* name, const Tensor& ref, const char* ref_name,
                              const char* op) {
  LST_CHECK(is_supported_float(t.scalar_type()), op, ": ", name,
            " must be float32, float64, float16 or bfloat16, got ", dtype_str(t));
  LST_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", device_str(t), " but ", ref_name, " is on ",
            device_str(ref), "; all tensors must be on one device");
  LST_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", dtype_str(t), " but ", ref_name,
            " has dtype ", dtype_str(ref));
  LST_CHECK(same_sizes(t, ref), op, ": ", name, " has shape ", shape_str(t), " but ", ref_name, " has shape ",
            shape_str(ref));
}

inline void check_device_type(const Tensor& t, DeviceType type, const char* op) {
  LST_CHECK(t.device().type() == type, op, ": expected tensors on ", device_type_str(type), ", got ",
            device_str(t));
}

inline void check_orthogonal_step_args(const Tensor& x, const Tensor& target, const Tensor& grad,
                                       const Tensor& adv) {
  constexpr const char* op = "lst_fast::orthogonal_step";
  LST_CHECK(x.dim() >= 1, op, ": x must have a batch dimension, got shape ", shape_str(x));
  check_data_tensor(x, "x", x, "x", op);
  check_data_tensor(target, "target", x, "x", op);
  check_data_tensor(grad, "grad", x, "x", op);
  check_data_tensor(adv, "adv", x, "x", op);
  check_no_internal_overlap(adv, "adv", op);
  check_no_overlap(adv, "adv", x, "x", op);
  check_no_overlap(adv, "adv", target, "target", op);
  check_no_overlap(adv, "adv", grad, "grad", op);
}

inline void check_orthogonal_step_scalars(double step_size, double adv_step_size, double lo, double hi) {
  constexpr const char* op = "lst_fast::orthogonal_step";
  LST_CHECK(std::isfinite(step_size), op, ": step_size must be finite, got ", num_str(step_size));
  LST_CHECK(std::isfinite(adv_step_size) && adv_step_size >= 0, op,
            ": adv_step_size must be finite and >= 0, got ", num_str(adv_step_size));
  LST_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo < hi, op,
            ": bounds must be finite with lo < hi, got lo=", num_str(lo), " hi=", num_str(hi));
}

inline void check_confidence_accept_args(const Tensor& logits, const Tensor& label, const Tensor& p0,
                                         const Tensor& x, const Tensor& candidate, const Tensor& grad,
                                         const Tensor& candidate_grad, const Tensor& confidence,
                                         double threshold) {
  constexpr const char* op = "lst_fast::confidence_accept";
  LST_CHECK(x.dim() >= 1, op, ": x must have a batch dimension, got shape ", shape_str(x));
  const int64_t n = x.size(0);
  check_data_tensor(candidate, "candidate", x, "x", op);
  check_data_tensor(grad, "grad", x, "x", op);
  check_data_tensor(candidate_grad, "candidate_grad", x, "x", op);
  LST_CHECK(logits.dim() == 2 && logits.size(0) == n, op, ": logits must have shape (", num_str(n),
            ", num_classes), got ", shape_str(logits));
  LST_CHECK(logits.size(1) >= 1, op, ": logits must have at least one class, got ", shape_str(logits));
  LST_CHECK(is_supported_float(logits.scalar_type()), op, ": logits must be a floating tensor, got ",
            dtype_str(logits));
  LST_CHECK(label.dim() == 1 && label.size(0) == n, op, ": label must have shape (", num_str(n), "), got ",
            shape_str(label));
  LST_CHECK(label.scalar_type() == ScalarType::Long, op, ": label must be int64, got ", dtype_str(label));
  LST_CHECK(p0.dim() == 1 && p0.size(0) == n, op, ": p0 must have shape (", num_str(n), "), got ",
            shape_str(p0));
  LST_CHECK(p0.scalar_type() == ScalarType::Float || p0.scalar_type() == ScalarType::Double, op,
            ": p0 must be float32 or float64, got ", dtype_str(p0));
  LST_CHECK(same_sizes(confidence, p0) && confidence.scalar_type() == p0.scalar_type(), op,
            ": confidence must match p0 (shape ", shape_str(p0), ", dtype ", dtype_str(p0), "), got shape ",
            shape_str(confidence), " dtype ", dtype_str(confidence));
  for (const Tensor* t : {&logits, &label, &p0, &confidence}) {
    LST_CHECK(t->device() == x.device(), op, ": all tensors must be on one device; x is on ", device_str(x),
              " but another argument is on ", device_str(*t));
  }
  check_no_internal_overlap(x, "x", op);
  check_no_internal_overlap(grad, "grad", op);
  check_no_overlap(x, "x", candidate, "candidate", op);
  check_no_overlap(grad, "grad", candidate_grad, "candidate_grad", op);
  check_no_overlap(x, "x", grad, "grad", op);
  LST_CHECK(!std::isnan(threshold), op, ": threshold must not be NaN");
}

inline void check_simplex_points_args(const Tensor& vertices, const Tensor& weights) {
  constexpr const char* op = "lst_fast::simplex_points";
  LST_CHECK(vertices.dim() >= 2, op, ": vertices must have shape (N, K, ...), got ", shape_str(vertices));
  LST_CHECK(vertices.size(1) >= 1, op, ": vertices need at least one vertex (K >= 1), got ",
            shape_str(vertices));
  LST_CHECK(is_supported_float(vertices.scalar_type()), op,
            ": vertices must be float32, float64, float16 or bfloat16, got ", dtype_str(vertices));
  LST_CHECK(weights.dim() == 2 && weights.size(1) == vertices.size(1), op,
            ": weights must have shape (P, K) with K = vertices.size(1) = ", num_str(vertices.size(1)),
            ", got ", shape_str(weights));
  LST_CHECK(weights.scalar_type() == ScalarType::Float || weights.scalar_type() == ScalarType::Double, op,
            ": weights must be float32 or float64, got ", dtype_str(weights));
  LST_CHECK(weights.device() == vertices.device(), op, ": weights are on ", device_str(weights),
            " but vertices are on ", device_str(vertices));
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
