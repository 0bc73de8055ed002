// CPU kernel of lst_fast::confidence_accept (schema in ../lst_fast.cpp, semantics in ../cuda/launchers.h).
#include <cmath>
#include <cstring>
#include <vector>

#include "../kernel_guards.h"

namespace lst_fast {
namespace {

// Source-class probability from one row of logits, as a stable log-sum-exp in double. NaN for a label
// outside [0, k), as in the CUDA kernel: such a sample is never accepted and nothing is read out of bounds.
template <typename logit_t>
double class_probability(const logit_t* row, int64_t k, int64_t label) {
  if (label < 0 || label >= k) return NAN;
  double m = -INFINITY;
  for (int64_t j = 0; j < k; ++j) m = std::max(m, static_cast<double>(row[j]));
  double sum = 0;
  for (int64_t j = 0; j < k; ++j) sum += std::exp(static_cast<double>(row[j]) - m);
  return std::exp(static_cast<double>(row[label]) - m) / sum;
}

// Widens p0 (float32 or float64) to double.
std::vector<double> to_doubles(const Tensor& p0) {
  const Tensor c = torch::stable::contiguous(p0);
  std::vector<double> out(static_cast<size_t>(c.numel()));
  if (c.scalar_type() == ScalarType::Double) {
    const double* p = c.const_data_ptr<double>();
    std::copy(p, p + out.size(), out.begin());
  } else {
    const float* p = c.const_data_ptr<float>();
    std::copy(p, p + out.size(), out.begin());
  }
  return out;
}

// confidence[i] = prob[i] (rounded to confidence's dtype) where accepted[i]; the rest stays.
void store_accepted(Tensor& confidence, const std::vector<double>& prob, const bool* accepted) {
  Tensor conf = torch::stable::contiguous(confidence);
  const auto n = static_cast<int64_t>(prob.size());
  if (conf.scalar_type() == ScalarType::Double) {
    double* c = conf.mutable_data_ptr<double>();
    for (int64_t i = 0; i < n; ++i) if (accepted[i]) c[i] = prob[i];
  } else {
    float* c = conf.mutable_data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) if (accepted[i]) c[i] = static_cast<float>(prob[i]);
  }
  if (conf.data_ptr() != confidence.data_ptr()) torch::stable::copy_(confidence, conf);
}

Tensor confidence_accept_cpu(Tensor logits, Tensor label, Tensor p0, double threshold, Tensor x,
                             Tensor candidate, Tensor grad, Tensor candidate_grad, Tensor confidence) {
  constexpr const char* op = "lst_fast_kernels::confidence_accept";
  guard_confidence_accept(logits, label, p0, x, candidate, grad, candidate_grad, confidence, DeviceType::CPU);

  const int64_t n = x.size(0);
  const int64_t k = logits.size(1);
  Tensor accepted = new_tensor(label, {n}, ScalarType::Bool);
  if (n == 0) return accepted;

  const Tensor logits_c = torch::stable::contiguous(logits);
  const Tensor label_c = torch::stable::contiguous(label);
  const int64_t* label_ptr = label_c.const_data_ptr<int64_t>();

  // Decisions first (tiny), then the row copies of the accepted samples.
  std::vector<double> prob(static_cast<size_t>(n));
  double* prob_ptr = prob.data();
  bool* acc_ptr = accepted.mutable_data_ptr<bool>();
  const std::vector<double> p0_d = to_doubles(p0);
  const double* p0_ptr = p0_d.data();
  dispatch_float(logits.scalar_type(), op, [&](auto tag) {
    using scalar_t = decltype(tag);
    const scalar_t* rows = logits_c.const_data_ptr<scalar_t>();
    torch::stable::parallel_for(0, n, std::max<int64_t>(1, 4096 / k), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const double p = class_probability(rows + i * k, k, label_ptr[i]);
        prob_ptr[i] = p;
        acc_ptr[i] = (p0_ptr[i] - p) < threshold;  // NaN (bad label, non-finite logits) is never accepted
      }
    });
  });
  store_accepted(confidence, prob, acc_ptr);

  if (x.numel() == 0) return accepted;
  RowDenseViews v({x, candidate, grad, candidate_grad});  // in place for row-dense layouts
  const int64_t row_bytes = x.numel() / n * static_cast<int64_t>(x.element_size());
  char* x_ptr = static_cast<char*>(v[0].mutable_data_ptr());
  const char* cx_ptr = static_cast<const char*>(v[1].const_data_ptr());
  char* g_ptr = static_cast<char*>(v[2].mutable_data_ptr());
  const char* cg_ptr = static_cast<const char*>(v[3].const_data_ptr());
  torch::stable::parallel_for(0, n, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, row_bytes)),
                              [&](int64_t begin, int64_t end) {
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

STABLE_TORCH_LIBRARY_IMPL(lst_fast_kernels, CPU, m) {
  m.impl("confidence_accept", TORCH_BOX(&confidence_accept_cpu));
}

}  // namespace lst_fast
