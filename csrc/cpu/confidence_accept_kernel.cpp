// CPU kernel of lst_fast::confidence_accept (schema in ../lst_fast.cpp, semantics in ../cuda/launchers.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>

#include "../op_checks.h"

namespace lst_fast {
namespace {

// Source-class probability from one row of logits, as a stable log-sum-exp in double.
template <typename logit_t>
double class_probability(const logit_t* row, int64_t k, int64_t label) {
  double m = -INFINITY;
  for (int64_t j = 0; j < k; ++j) m = std::max(m, static_cast<double>(row[j]));
  double sum = 0;
  for (int64_t j = 0; j < k; ++j) sum += std::exp(static_cast<double>(row[j]) - m);
  return std::exp(static_cast<double>(row[label]) - m) / sum;
}

at::Tensor confidence_accept_cpu(const at::Tensor& logits, const at::Tensor& label, const at::Tensor& p0,
                                 double threshold, at::Tensor& x, const at::Tensor& candidate, at::Tensor& grad,
                                 const at::Tensor& candidate_grad, at::Tensor& confidence) {
  constexpr const char* op = "lst_fast::confidence_accept";
  check_confidence_accept_args(logits, label, p0, x, candidate, grad, candidate_grad, confidence);
  check_device_type(x, at::kCPU, op);
  LST_CHECK(!std::isnan(threshold), op, ": threshold must not be NaN");

  const int64_t n = x.size(0);
  const int64_t k = logits.size(1);
  at::Tensor accepted = at::empty({n}, label.options().dtype(at::kBool));
  if (n == 0) return accepted;

  const at::Tensor logits_c = logits.contiguous();
  const at::Tensor label_c = label.contiguous();
  const at::Tensor p0_c = p0.contiguous();
  const int64_t* label_ptr = label_c.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    LST_CHECK(label_ptr[i] >= 0 && label_ptr[i] < k, op, ": label[", num_str(i), "] = ", num_str(label_ptr[i]),
                " is outside [0, ", num_str(k), ")");
  }

  // Decisions first (tiny), then the row copies of the accepted samples.
  at::Tensor prob = at::empty({n}, p0.options().dtype(at::kDouble));
  double* prob_ptr = prob.mutable_data_ptr<double>();
  bool* acc_ptr = accepted.mutable_data_ptr<bool>();
  at::Tensor p0_d = p0_c.to(at::kDouble);
  const double* p0_ptr = p0_d.const_data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "confidence_accept_cpu", [&] {
    const scalar_t* rows = logits_c.const_data_ptr<scalar_t>();
    at::parallel_for(0, n, std::max<int64_t>(1, 4096 / k), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const double p = class_probability(rows + i * k, k, label_ptr[i]);
        prob_ptr[i] = p;
        acc_ptr[i] = (p0_ptr[i] - p) < threshold;  // NaN (e.g. from non-finite logits) is never accepted
      }
    });
  });
  confidence.copy_(at::where(accepted, prob, confidence));

  if (x.numel() == 0) return accepted;
  const RowDenseViews v({x, candidate, grad, candidate_grad});  // in place for row-dense layouts
  const int64_t row_bytes = x.numel() / n * x.element_size();
  char* x_ptr = static_cast<char*>(v[0].mutable_data_ptr());
  const char* cx_ptr = static_cast<const char*>(v[1].const_data_ptr());
  char* g_ptr = static_cast<char*>(v[2].mutable_data_ptr());
  const char* cg_ptr = static_cast<const char*>(v[3].const_data_ptr());
  at::parallel_for(0, n, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, row_bytes)), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (!acc_ptr[i]) continue;
      std::memcpy(x_ptr + i * row_bytes, cx_ptr + i * row_bytes, row_bytes);
      std::memcpy(g_ptr + i * row_bytes, cg_ptr + i * row_bytes, row_bytes);
    }
  });
  v.write_back(0);
  v.write_back(2);
  return accepted;
}

}  // namespace

TORCH_LIBRARY_IMPL(lst_fast, CPU, m) {
  m.impl("confidence_accept", &confidence_accept_cpu);
}

}  // namespace lst_fast
