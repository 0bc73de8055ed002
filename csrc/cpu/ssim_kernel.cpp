// CPU kernel of lst_fast_kernels::ssim: the structural similarity of each image pair (N, C, H, W), with a
// separable window over the valid (unpadded) positions, all in float64. lst_fast.metrics.ssim calls it on
// the CPU and keeps the pure-PyTorch blocks version (band-matrix products) as the fallback and the oracle
// (tests/test_ssim_kernel.py); both are Wang et al. 2004 as scikit-image computes it.
//
// Why a kernel: the blur is 11 taps a side, and the band products cost 26 multiply-adds per output and side
// (the blocks' zeros) in matrix products whose inner size is 26. Here each plane is blurred tap by tap
// (11 multiply-adds per output and side), the four maps at once, and the SSIM map is summed as it is made,
// so a plane's working set (4 x H x W_out doubles: 1.5 MB at 224 px) stays in cache. One task a plane;
// per-image sums are taken over the planes in order afterwards, so the result does not depend on threads.
#include <vector>

#include "../kernel_guards.h"

// The loops are plain C++ that the compiler vectorizes (__restrict__: the maps never alias). Built for
// generic x86-64 (SSE2) they ran 1.24 ms a 224-px pair on 2 cores, AVX2 1.06 ms, AVX-512 clones 1.11 ms:
// the passes wait on memory more than on arithmetic, so no per-CPU copies are built.

namespace lst_fast {
namespace {

// The 1-D blur of four maps at once: out_m[j] = sum_k g[k] * in_m[k * stride + j], j < n. Along a row the
// taps are neighbours (stride 1); down a column they are rows of the horizontally blurred maps (stride w_out).
void blur4(const double* __restrict__ a, const double* __restrict__ b, const double* __restrict__ c,
           const double* __restrict__ d, int64_t stride, const double* __restrict__ g, int64_t taps, int64_t n,
           double* __restrict__ out_a, double* __restrict__ out_b, double* __restrict__ out_c,
           double* __restrict__ out_d) {
  for (int64_t j = 0; j < n; ++j) {
    out_a[j] = g[0] * a[j];
    out_b[j] = g[0] * b[j];
    out_c[j] = g[0] * c[j];
    out_d[j] = g[0] * d[j];
  }
  for (int64_t k = 1; k < taps; ++k) {
    const double gk = g[k];
    const int64_t at = k * stride;
    for (int64_t j = 0; j < n; ++j) {
      out_a[j] += gk * a[at + j];
      out_b[j] += gk * b[at + j];
      out_c[j] += gk * c[at + j];
      out_d[j] += gk * d[at + j];
    }
  }
}

// Horizontal pass of one row: x, y, x^2 + y^2 and xy blurred along the row into hx, hy, hs, hp.
void blur_row(const double* __restrict__ x, const double* __restrict__ y, const double* __restrict__ g, int64_t taps,
              int64_t w, int64_t w_out, double* __restrict__ squares, double* __restrict__ products,
              double* hx, double* hy, double* hs, double* hp) {
  for (int64_t j = 0; j < w; ++j) {
    squares[j] = x[j] * x[j] + y[j] * y[j];
    products[j] = x[j] * y[j];
  }
  blur4(x, y, squares, products, 1, g, taps, w_out, hx, hy, hs, hp);
}

// Vertical pass of one output row, then the SSIM map on it; returns the row's sum. h* point at the first
// input row; consecutive rows are `w_out` apart.
double ssim_row(const double* hx, const double* hy, const double* hs, const double* hp, const double* g, int64_t taps,
                int64_t w_out, double c1, double c2, double* __restrict__ mx, double* __restrict__ my,
                double* __restrict__ ms, double* __restrict__ mp) {
  blur4(hx, hy, hs, hp, w_out, g, taps, w_out, mx, my, ms, mp);
  for (int64_t j = 0; j < w_out; ++j) {
    const double mu_xy = mx[j] * my[j];
    const double mu_sq = mx[j] * mx[j] + my[j] * my[j];
    // (2 mu_x mu_y + c1)(2 cov + c2) / ((mu_x^2 + mu_y^2 + c1)(var_x + var_y + c2))
    const double numerator = (2.0 * mu_xy + c1) * (2.0 * (mp[j] - mu_xy) + c2);
    const double denominator = (mu_sq + c1) * (ms[j] - mu_sq + c2);
    mx[j] = numerator / denominator;
  }
  double sum = 0.0;
  for (int64_t j = 0; j < w_out; ++j) sum += mx[j];
  return sum;
}

template <typename scalar_t>
void ssim_planes(const scalar_t* x, const scalar_t* y, const double* g, int64_t taps, int64_t planes, int64_t h,
                 int64_t w, double c1, double c2, double* plane_sums) {
  const int64_t h_out = h - taps + 1, w_out = w - taps + 1;
  torch::stable::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    // per task: the plane's rows as double, its products, the four horizontally blurred maps, one output row
    std::vector<double> row(4 * w), blurred(4 * h * w_out), out_row(4 * w_out);
    double *rx = row.data(), *ry = rx + w, *squares = ry + w, *products = squares + w;
    double *hx = blurred.data(), *hy = hx + h * w_out, *hs = hy + h * w_out, *hp = hs + h * w_out;
    for (int64_t plane = begin; plane < end; ++plane) {
      const scalar_t* xp = x + plane * h * w;
      const scalar_t* yp = y + plane * h * w;
      for (int64_t r = 0; r < h; ++r) {
        for (int64_t j = 0; j < w; ++j) {
          rx[j] = static_cast<double>(xp[r * w + j]);
          ry[j] = static_cast<double>(yp[r * w + j]);
        }
        const int64_t at = r * w_out;
        blur_row(rx, ry, g, taps, w, w_out, squares, products, hx + at, hy + at, hs + at, hp + at);
      }
      double sum = 0.0;
      for (int64_t i = 0; i < h_out; ++i) {
        const int64_t at = i * w_out;
        double* m = out_row.data();
        sum += ssim_row(hx + at, hy + at, hs + at, hp + at, g, taps, w_out, c1, c2, m, m + w_out, m + 2 * w_out,
                        m + 3 * w_out);
      }
      plane_sums[plane] = sum;
    }
  });
}

Tensor ssim_cpu(Tensor x, Tensor y, Tensor window, double c1, double c2) {
  const bool images = x.dim() == 4 && (x.scalar_type() == ScalarType::Float || x.scalar_type() == ScalarType::Double) &&
                      x.device().type() == DeviceType::CPU && like(y, x);
  const int64_t taps = window.dim() == 1 ? window.size(0) : 0;
  refuse_unless(images && taps >= 1 && window.scalar_type() == ScalarType::Double && window.device() == x.device() &&
                    x.size(2) >= taps && x.size(3) >= taps,
                "ssim");
  const int64_t n = x.size(0), channels = x.size(1), h = x.size(2), w = x.size(3);
  Tensor out = new_tensor(x, {n}, ScalarType::Double);
  if (n == 0) return out;
  const Tensor xc = torch::stable::contiguous(x), yc = torch::stable::contiguous(y);
  const Tensor g = torch::stable::contiguous(window);
  std::vector<double> plane_sums(n * channels);
  if (x.scalar_type() == ScalarType::Float) {
    ssim_planes<float>(xc.const_data_ptr<float>(), yc.const_data_ptr<float>(), g.const_data_ptr<double>(), taps,
                       n * channels, h, w, c1, c2, plane_sums.data());
  } else {
    ssim_planes<double>(xc.const_data_ptr<double>(), yc.const_data_ptr<double>(), g.const_data_ptr<double>(), taps,
                        n * channels, h, w, c1, c2, plane_sums.data());
  }
  const double positions = static_cast<double>((h - taps + 1) * (w - taps + 1));
  double* o = out.mutable_data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    double total = 0.0;
    for (int64_t c = 0; c < channels; ++c) total += plane_sums[i * channels + c] / positions;
    o[i] = total / static_cast<double>(channels);
  }
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(lst_fast_kernels, CPU, m) {
  m.impl("ssim", TORCH_BOX(&ssim_cpu));
}

}  // namespace lst_fast
