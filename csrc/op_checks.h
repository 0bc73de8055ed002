// Argument checks and layout helpers shared by the CPU and CUDA registrations. Header-only so that both
// backends give the same error messages for the same mistakes.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include <utility>
#include <vector>
#include <cstdio>
#include <string>
#include <type_traits>

namespace lst_fast {

// Our checks build their messages from strings alone and hand TORCH_CHECK one std::string, which c10
// passes through without a std::ostream. Formatting inside this library (c10::str streams numbers
// and torch types) crashed on one GPU machine (torch 2.11 built there with GCC 13, whose C++ runtime
// pieces in this library did not match the one loaded with torch); std::to_string and snprintf do not
// touch streams or locales. A number or torch type passed to LST_CHECK does not compile.
inline void append(std::string& s, const char* piece) { s += piece; }
inline void append(std::string& s, const std::string& piece) { s += piece; }

template <typename... Pieces>
std::string message(const Pieces&... pieces) {
  std::string s;
  (append(s, pieces), ...);
  return s;
}

#define LST_CHECK(cond, ...) TORCH_CHECK(cond, ::lst_fast::message(__VA_ARGS__))

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

inline std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}
inline const char* dtype_str(const at::Tensor& t) { return c10::toString(t.scalar_type()); }
inline std::string device_str(const at::Tensor& t) { return t.device().str(); }

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_data_tensor(const at::Tensor& t, const char* name, const at::Tensor& ref,
                              const char* ref_name, const char* op) {
  LST_CHECK(is_supported_float(t.scalar_type()), op, ": ", name,
              " must be float32, float64, float16 or bfloat16, got ", dtype_str(t));
  LST_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", device_str(t), " but ", ref_name,
              " is on ", device_str(ref), "; all tensors must be on one device");
  LST_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " has dtype ", dtype_str(t),
              " but ", ref_name, " has dtype ", dtype_str(ref));
  LST_CHECK(t.sizes() == ref.sizes(), op, ": ", name, " has shape ", shape_str(t), " but ", ref_name,
              " has shape ", shape_str(ref));
}

inline void check_device_type(const at::Tensor& t, at::DeviceType type, const char* op) {
  LST_CHECK(t.device().type() == type, op, ": expected tensors on ", c10::DeviceTypeName(type, /*lower_case=*/true), ", got ", device_str(t));
}

// True when every tensor has the same sizes and strides, its memory is non-overlapping and dense, and
// the batch dimension is outermost. Then sample n is one dense block of D = numel / N elements at
// offset n * D (NCHW contiguous and channels-last both qualify), and the kernels can walk raw memory.
inline bool rows_share_dense_layout(const std::vector<at::Tensor>& tensors) {
  const at::Tensor& ref = tensors.front();
  if (!ref.is_non_overlapping_and_dense()) return false;
  if (ref.dim() > 0 && ref.size(0) > 1 && ref.stride(0) * ref.size(0) != ref.numel()) return false;
  for (const at::Tensor& t : tensors) {
    if (t.sizes() != ref.sizes() || t.strides() != ref.strides()) return false;
  }
  return true;
}

// The tensors as the kernels see them: the caller's own when they all share one row-dense layout,
// contiguous copies otherwise. write_back(i) copies an in-place result back to the caller's tensor.
class RowDenseViews {
 public:
  explicit RowDenseViews(std::vector<at::Tensor> tensors)
      : original_(std::move(tensors)), direct_(rows_share_dense_layout(original_)) {
    for (const at::Tensor& t : original_) work_.push_back(direct_ ? t : t.contiguous());
  }
  const at::Tensor& operator[](size_t i) const { return work_[i]; }
  void write_back(size_t i) const {
    if (!work_[i].is_same(original_[i])) original_[i].copy_(work_[i]);
  }

 private:
  std::vector<at::Tensor> original_;
  bool direct_;
  std::vector<at::Tensor> work_;
};

inline void check_orthogonal_step_args(const at::Tensor& x, const at::Tensor& target,
                                       const at::Tensor& grad, const at::Tensor& adv) {
  constexpr const char* op = "lst_fast::orthogonal_step";
  LST_CHECK(x.dim() >= 1, op, ": x must have a batch dimension, got shape ", shape_str(x));
  check_data_tensor(x, "x", x, "x", op);
  check_data_tensor(target, "target", x, "x", op);
  check_data_tensor(grad, "grad", x, "x", op);
  check_data_tensor(adv, "adv", x, "x", op);
  at::assert_no_internal_overlap(adv);
  at::assert_no_overlap(adv, x);
  at::assert_no_overlap(adv, target);
  at::assert_no_overlap(adv, grad);
}

inline void check_orthogonal_step_scalars(double step_size, double adv_step_size, double lo, double hi) {
  constexpr const char* op = "lst_fast::orthogonal_step";
  LST_CHECK(std::isfinite(step_size), op, ": step_size must be finite, got ", num_str(step_size));
  LST_CHECK(std::isfinite(adv_step_size) && adv_step_size >= 0, op,
              ": adv_step_size must be finite and >= 0, got ", num_str(adv_step_size));
  LST_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo < hi, op,
              ": bounds must be finite with lo < hi, got lo=", num_str(lo), " hi=", num_str(hi));
}

inline void check_confidence_accept_args(const at::Tensor& logits, const at::Tensor& label,
                                         const at::Tensor& p0, const at::Tensor& x,
                                         const at::Tensor& candidate, const at::Tensor& grad,
                                         const at::Tensor& candidate_grad, const at::Tensor& confidence) {
  constexpr const char* op = "lst_fast::confidence_accept";
  LST_CHECK(x.dim() >= 1, op, ": x must have a batch dimension, got shape ", shape_str(x));
  const int64_t n = x.size(0);
  check_data_tensor(candidate, "candidate", x, "x", op);
  check_data_tensor(grad, "grad", x, "x", op);
  check_data_tensor(candidate_grad, "candidate_grad", x, "x", op);
  LST_CHECK(logits.dim() == 2 && logits.size(0) == n, op, ": logits must have shape (", num_str(n),
              ", num_classes), got ", shape_str(logits));
  LST_CHECK(logits.size(1) >= 1, op, ": logits must have at least one class, got ", shape_str(logits));
  LST_CHECK(is_supported_float(logits.scalar_type()), op,
              ": logits must be a floating tensor, got ", dtype_str(logits));
  LST_CHECK(label.dim() == 1 && label.size(0) == n, op, ": label must have shape (", num_str(n), "), got ",
              shape_str(label));
  LST_CHECK(label.scalar_type() == at::kLong, op, ": label must be int64, got ", dtype_str(label));
  LST_CHECK(p0.dim() == 1 && p0.size(0) == n, op, ": p0 must have shape (", num_str(n), "), got ", shape_str(p0));
  LST_CHECK(p0.scalar_type() == at::kFloat || p0.scalar_type() == at::kDouble, op,
              ": p0 must be float32 or float64, got ", dtype_str(p0));
  LST_CHECK(confidence.sizes() == p0.sizes() && confidence.scalar_type() == p0.scalar_type(), op,
              ": confidence must match p0 (shape ", shape_str(p0), ", dtype ", dtype_str(p0), "), got shape ",
              shape_str(confidence), " dtype ", dtype_str(confidence));
  for (const at::Tensor* t : {&logits, &label, &p0, &confidence}) {
    LST_CHECK(t->device() == x.device(), op, ": all tensors must be on one device; x is on ", device_str(x),
                " but another argument is on ", device_str(*t));
  }
  at::assert_no_internal_overlap(x);
  at::assert_no_internal_overlap(grad);
  at::assert_no_overlap(x, candidate);
  at::assert_no_overlap(grad, candidate_grad);
  at::assert_no_overlap(x, grad);
}

inline void check_simplex_points_args(const at::Tensor& vertices, const at::Tensor& weights) {
  constexpr const char* op = "lst_fast::simplex_points";
  LST_CHECK(vertices.dim() >= 2, op, ": vertices must have shape (N, K, ...), got ", shape_str(vertices));
  LST_CHECK(vertices.size(1) >= 1, op, ": vertices need at least one vertex (K >= 1), got ",
              shape_str(vertices));
  LST_CHECK(is_supported_float(vertices.scalar_type()), op,
              ": vertices must be float32, float64, float16 or bfloat16, got ", dtype_str(vertices));
  LST_CHECK(weights.dim() == 2 && weights.size(1) == vertices.size(1), op,
              ": weights must have shape (P, K) with K = vertices.size(1) = ", num_str(vertices.size(1)), ", got ",
              shape_str(weights));
  LST_CHECK(weights.scalar_type() == at::kFloat || weights.scalar_type() == at::kDouble, op,
              ": weights must be float32 or float64, got ", dtype_str(weights));
  LST_CHECK(weights.device() == vertices.device(), op, ": weights are on ", device_str(weights),
              " but vertices are on ", device_str(vertices));
}

// Output shape of simplex_points: (N * P, *vertices.shape[2:]).
inline std::vector<int64_t> simplex_points_shape(const at::Tensor& vertices, const at::Tensor& weights) {
  std::vector<int64_t> shape{vertices.size(0) * weights.size(0)};
  for (int64_t d = 2; d < vertices.dim(); ++d) shape.push_back(vertices.size(d));
  return shape;
}

// Weights in the kernels' arithmetic type: float for reduced and single precision, double for double.
inline at::Tensor simplex_weights_in_opmath(const at::Tensor& vertices, const at::Tensor& weights) {
  const auto opmath = vertices.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return weights.to(opmath).contiguous();
}

}  // namespace lst_fast
