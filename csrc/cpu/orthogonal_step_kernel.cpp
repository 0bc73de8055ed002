// CPU kernel of lst_fast::orthogonal_step (schema in ../lst_fast.cpp, semantics in ../cuda/launchers.h).
#include <algorithm>
#include <vector>

#include "../kernel_guards.h"

namespace lst_fast {
namespace {

// Elements per task. Chunks never cross a sample, so the per-sample sums are combined in a fixed order:
// results do not depend on the thread count or on the other samples in the batch.
constexpr int64_t kChunk = 16384;

template <typename T>
inline T clamp_keep_nan(T v, T lo, T hi) {
  return v < lo ? lo : (v > hi ? hi : v);  // NaN compares false and passes through, like torch.clamp
}

template <typename scalar_t>
void orthogonal_step_kernel(const scalar_t* x, const scalar_t* target, const scalar_t* grad, scalar_t* adv,
                            scalar_t* out, int64_t n, int64_t d, double step_size, double adv_step_size,
                            double lo, double hi) {
  using opmath_t = lst_fast::opmath_t<scalar_t>;
  const int64_t chunks = (d + kChunk - 1) / kChunk;
  const int64_t tasks = n * chunks;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, std::min(d, kChunk)));

  // Pass 1: per-chunk partial <g, v> and <g, g> in double.
  std::vector<double> partial(2 * tasks);
  torch::stable::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / chunks;
      const int64_t lo_i = row * d + (task % chunks) * kChunk;
      const int64_t hi_i = std::min(lo_i + kChunk, (row + 1) * d);
      constexpr int kLanes = 4;  // independent accumulators, so the loop can pipeline
      double gv[kLanes] = {0, 0, 0, 0};
      double gg[kLanes] = {0, 0, 0, 0};
      int64_t i = lo_i;
      for (; i + kLanes <= hi_i; i += kLanes) {
        for (int l = 0; l < kLanes; ++l) {
          const double g = static_cast<double>(static_cast<opmath_t>(grad[i + l]));
          const opmath_t v = static_cast<opmath_t>(target[i + l]) - static_cast<opmath_t>(x[i + l]);
          gv[l] += g * static_cast<double>(v);
          gg[l] += g * g;
        }
      }
      for (; i < hi_i; ++i) {
        const double g = static_cast<double>(static_cast<opmath_t>(grad[i]));
        const opmath_t v = static_cast<opmath_t>(target[i]) - static_cast<opmath_t>(x[i]);
        gv[0] += g * static_cast<double>(v);
        gg[0] += g * g;
      }
      partial[2 * task] = (gv[0] + gv[1]) + (gv[2] + gv[3]);
      partial[2 * task + 1] = (gg[0] + gg[1]) + (gg[2] + gg[3]);
    }
  });

  std::vector<double> coef(n);
  for (int64_t row = 0; row < n; ++row) {
    double gv = 0, gg = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      gv += partial[2 * (row * chunks + c)];
      gg += partial[2 * (row * chunks + c) + 1];
    }
    coef[row] = gg > 0 ? gv / gg : 0.0;  // zero gradient: step along v itself
  }

  // Pass 2: projection, adversarial term, step and clamp; every operation rounded on its own.
  const opmath_t eta = static_cast<opmath_t>(step_size);
  const opmath_t half_eps = static_cast<opmath_t>(adv_step_size / 2);
  const opmath_t eps = static_cast<opmath_t>(adv_step_size);
  const opmath_t lo_t = static_cast<opmath_t>(lo);
  const opmath_t hi_t = static_cast<opmath_t>(hi);
  torch::stable::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t row = task / chunks;
      const int64_t lo_i = row * d + (task % chunks) * kChunk;
      const int64_t hi_i = std::min(lo_i + kChunk, (row + 1) * d);
      const double c = coef[row];
      for (int64_t i = lo_i; i < hi_i; ++i) {
        const opmath_t g = static_cast<opmath_t>(grad[i]);
        const opmath_t xi = static_cast<opmath_t>(x[i]);
        const opmath_t v = static_cast<opmath_t>(target[i]) - xi;
        const opmath_t vp = static_cast<opmath_t>(static_cast<double>(v) - c * static_cast<double>(g));
        const opmath_t step = half_eps * g;
        const opmath_t a = clamp_keep_nan<opmath_t>(static_cast<opmath_t>(adv[i]) + step, -eps, eps);
        const opmath_t moved = xi + eta * vp;
        out[i] = static_cast<scalar_t>(clamp_keep_nan<opmath_t>(moved - a, lo_t, hi_t));
        adv[i] = static_cast<scalar_t>(a);
      }
    }
  });
}

Tensor orthogonal_step_cpu(Tensor x, Tensor target, Tensor grad, Tensor adv, double step_size,
                           double adv_step_size, double lo, double hi) {
  constexpr const char* op = "lst_fast_kernels::orthogonal_step";
  guard_orthogonal_step(x, target, grad, adv, DeviceType::CPU);

  Tensor out = torch::stable::empty_like(x);
  if (x.numel() == 0) return out;

  // In place on the caller's memory for contiguous and channels-last layouts; copies otherwise.
  RowDenseViews v({x, target, grad, adv, out}, /*write_only=*/1);
  const int64_t n = x.size(0);
  const int64_t d = x.numel() / n;
  dispatch_float(x.scalar_type(), op, [&](auto tag) {
    using scalar_t = decltype(tag);
    orthogonal_step_kernel<scalar_t>(v[0].const_data_ptr<scalar_t>(), v[1].const_data_ptr<scalar_t>(),
                                     v[2].const_data_ptr<scalar_t>(), v[3].mutable_data_ptr<scalar_t>(),
                                     v[4].mutable_data_ptr<scalar_t>(), n, d, step_size, adv_step_size, lo, hi);
  });
  v.write_back(3);
  v.write_back(4);
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(lst_fast_kernels, CPU, m) {
  m.impl("orthogonal_step", TORCH_BOX(&orthogonal_step_cpu));
}

}  // namespace lst_fast
