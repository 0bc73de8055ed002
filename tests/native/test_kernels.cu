// Standalone GPU check of the lst_fast kernels (no torch): bit-exact / tolerance comparisons against a
// host reference, determinism, CUDA-graph capture, and a few bandwidth numbers. Run by hand only:
// bench/gpu_check.sh no longer builds it, since tests/test_cuda.py covers its checks through the
// installed module (misaligned buffers, rows up to 4.2M elements, graph capture, determinism).
// Build (from the repo root):
//   nvcc -std=c++17 -O3 -arch=sm_90 -Xcompiler -ffp-contract=off -Icsrc/cuda \
//        csrc/cuda/orthogonal_step_kernel.cu csrc/cuda/confidence_accept_kernel.cu \
//        csrc/cuda/simplex_points_kernel.cu test_kernels.cu -o test_kernels
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <vector>
#include <random>
#include <string>
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "launchers.h"

using namespace lst_fast::cuda;

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
  printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); exit(2); } } while (0)

static int g_fail = 0, g_pass = 0;
static void check(bool ok, const std::string& what) {
  if (ok) ++g_pass; else { ++g_fail; printf("FAIL: %s\n", what.c_str()); }
}

template <typename T> struct H;
template <> struct H<float> { using O = float; static DType dt() { return DType::Float32; }
  static float to(float v) { return v; } static float from(float v) { return v; } static const char* name() { return "f32"; } };
template <> struct H<double> { using O = double; static DType dt() { return DType::Float64; }
  static double to(double v) { return v; } static double from(double v) { return v; } static const char* name() { return "f64"; } };
template <> struct H<__half> { using O = float; static DType dt() { return DType::Float16; }
  static float to(__half v) { return __half2float(v); } static __half from(float v) { return __float2half_rn(v); } static const char* name() { return "f16"; } };
template <> struct H<__nv_bfloat16> { using O = float; static DType dt() { return DType::BFloat16; }
  static float to(__nv_bfloat16 v) { return __bfloat162float(v); } static __nv_bfloat16 from(float v) { return __float2bfloat16_rn(v); } static const char* name() { return "bf16"; } };

template <typename O> static O clampr(O v, O lo, O hi) { O r = v < lo ? lo : v; return r > hi ? hi : r; }

// Same bits, or both NaN (NaN payloads differ between host and device).
template <typename T> static bool same(T a, T b) {
  double da = (double)H<T>::to(a), db = (double)H<T>::to(b);
  if (std::isnan(da) && std::isnan(db)) return true;
  return memcmp(&a, &b, sizeof(T)) == 0;
}

template <typename T>
static void ref_orth(const std::vector<T>& x, const std::vector<T>& tg, const std::vector<T>& g, std::vector<T>& adv,
                     std::vector<T>& out, int64_t N, int64_t D, double ss, double as, double lo, double hi) {
  using O = typename H<T>::O;
  for (int64_t n = 0; n < N; ++n) {
    double gv = 0, gg = 0;
    for (int64_t i = 0; i < D; ++i) {
      int64_t k = n * D + i;
      O v = H<T>::to(tg[k]) - H<T>::to(x[k]);
      double gd = (double)H<T>::to(g[k]);
      gv += gd * (double)v; gg += gd * gd;
    }
    double coef = gg > 0 ? gv / gg : 0.0;
    for (int64_t i = 0; i < D; ++i) {
      int64_t k = n * D + i;
      O xo = H<T>::to(x[k]), to = H<T>::to(tg[k]), go = H<T>::to(g[k]), ao = H<T>::to(adv[k]);
      O v = to - xo;
      double t1 = coef * (double)go;
      O vp = (O)((double)v - t1);
      O hg = (O)(as / 2) * go;
      O d = clampr<O>(ao + hg, -(O)as, (O)as);
      O sv = (O)ss * vp;
      O xn = clampr<O>((xo + sv) - d, (O)lo, (O)hi);
      adv[k] = H<T>::from(d); out[k] = H<T>::from(xn);
    }
  }
}

template <typename T> static T* dalloc(size_t n) { void* p; CK(cudaMalloc(&p, n * sizeof(T) + 64)); return (T*)p; }

template <typename T>
static void test_orth(int64_t N, int64_t D, bool misalign, bool dyadic, std::mt19937& rng) {
  size_t n = (size_t)(N * D);
  std::vector<T> x(n), tg(n), g(n), adv(n), out(n, H<T>::from(0)), adv_r, out_r(n);
  std::uniform_int_distribution<int> di(-64, 64);
  std::normal_distribution<double> nd(0.0, 1.0);
  for (size_t i = 0; i < n; ++i) {
    if (dyadic) { x[i] = H<T>::from(di(rng) / 64.0f); tg[i] = H<T>::from(di(rng) / 64.0f);
                  g[i] = H<T>::from(di(rng) / 64.0f); adv[i] = H<T>::from(di(rng) / 256.0f); }
    else { x[i] = H<T>::from((float)nd(rng)); tg[i] = H<T>::from((float)nd(rng));
           g[i] = H<T>::from((float)(nd(rng) * 1e-2)); adv[i] = H<T>::from((float)(nd(rng) * 1e-3)); }
  }
  if (N > 2) {  // row 1: zero grad (coef 0); row 2: a NaN in x
    for (int64_t i = 0; i < D; ++i) g[D + i] = H<T>::from(0.0f);
    x[2 * D + D / 2] = H<T>::from(NAN);
  }
  const double ss = 0.25, as = 0.03125, lo = -1.5, hi = 1.5;
  adv_r = adv;
  ref_orth(x, tg, g, adv_r, out_r, N, D, ss, as, lo, hi);

  int off = misalign ? 1 : 0;
  T *dx = dalloc<T>(n) + off, *dt = dalloc<T>(n) + off, *dg = dalloc<T>(n) + off, *da = dalloc<T>(n) + off,
    *dout = dalloc<T>(n) + off;
  int64_t wsn = orthogonal_step_workspace(N, D);
  double* ws = nullptr; if (wsn) CK(cudaMalloc(&ws, wsn * sizeof(double)));
  CK(cudaMemcpy(dx, x.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dt, tg.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dg, g.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  std::vector<T> adv1(n), out1(n), adv2(n), out2(n);
  for (int rep = 0; rep < 2; ++rep) {
    CK(cudaMemcpy(da, adv.data(), n * sizeof(T), cudaMemcpyHostToDevice));
    CK(orthogonal_step(H<T>::dt(), dx, dt, dg, da, dout, ws, N, D, ss, as, lo, hi, 0));
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(rep ? adv2.data() : adv1.data(), da, n * sizeof(T), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(rep ? out2.data() : out1.data(), dout, n * sizeof(T), cudaMemcpyDeviceToHost));
  }
  size_t bad = 0, far = 0, first = (size_t)-1;
  for (size_t i = 0; i < n; ++i) {
    bool ok = same(adv1[i], adv_r[i]) && same(out1[i], out_r[i]);
    if (!ok) { ++bad; if (first == (size_t)-1) first = i;
      // Beyond one unit in the last place of T (eps_T * max(|ref|, 1); 2^-40 for float64, whose sum-order
      // differences reach the output unrounded): not a sum-order effect.
      const double eps = sizeof(T) == 8 ? 0x1p-40 : sizeof(T) == 4 ? 0x1p-23 : H<T>::dt() == DType::Float16 ? 0x1p-10 : 0x1p-7;
      double r = (double)H<T>::to(out_r[i]);
      double e = fabs((double)H<T>::to(out1[i]) - r);
      if (!(e <= eps * fmax(fabs(r), 1.0)) || !same(adv1[i], adv_r[i])) ++far; }
  }
  bool det = memcmp(adv1.data(), adv2.data(), n * sizeof(T)) == 0 && memcmp(out1.data(), out2.data(), n * sizeof(T)) == 0;
  char buf[256];
  snprintf(buf, sizeof buf, "orth %s N=%lld D=%lld mis=%d dyadic=%d: %zu/%zu differ (%zu far) first=%zd det=%d",
           H<T>::name(), (long long)N, (long long)D, misalign, dyadic, bad, n, far, (ssize_t)first, det);
  // Dyadic data: every sum is exact, so the result must match bit for bit. Random data: only the
  // order of the double sums differs, so allow rare last-bit differences.
  // float64 has no coarser type to round the coefficient into, so any difference in the order of
  // the double sums shows in the output; there only "far" differences count.
  bool ok = det && (dyadic ? bad == 0 : (far == 0 && (sizeof(T) == 8 || bad <= n / 100 + 2)));
  check(ok, buf);
  if (!ok && first != (size_t)-1) printf("  first diff at %zu: out %.9g vs ref %.9g, adv %.9g vs %.9g\n", first,
      (double)H<T>::to(out1[first]), (double)H<T>::to(out_r[first]), (double)H<T>::to(adv1[first]), (double)H<T>::to(adv_r[first]));
  CK(cudaFree(dx - off)); CK(cudaFree(dt - off)); CK(cudaFree(dg - off)); CK(cudaFree(da - off)); CK(cudaFree(dout - off));
  if (ws) CK(cudaFree(ws));
}

template <typename L, typename C>
static void test_conf(int64_t N, int64_t K, int64_t row_bytes, int moff, std::mt19937& rng) {
  std::normal_distribution<double> nd(0.0, 2.0);
  std::uniform_real_distribution<double> ud(0.0, 1.0);
  std::vector<L> logits(N * K); for (auto& v : logits) v = (L)nd(rng);
  std::vector<int64_t> label(N);
  std::vector<C> p0(N), conf(N, (C)-7.0);
  for (int64_t n = 0; n < N; ++n) { label[n] = (int64_t)(ud(rng) * K); p0[n] = (C)ud(rng); }
  if (N > 3) { label[1] = -1; label[2] = K; p0[1] = p0[2] = (C)-10.0; }  // OOB -> never accepted
  if (N > 4) logits[3 * K] = (L)NAN;  // NaN logit -> p NaN -> not accepted
  const double thr = 0.2;
  size_t nb = (size_t)(N * row_bytes);
  std::vector<uint8_t> x(nb), cand(nb), gr(nb), cg(nb);
  for (size_t i = 0; i < nb; ++i) { x[i] = rng(); cand[i] = rng(); gr[i] = rng(); cg[i] = rng(); }

  L* dl; int64_t* dlab; C *dp0, *dconf; bool* dacc; uint8_t *dx, *dc, *dg, *dcg;
  CK(cudaMalloc(&dl, N * K * sizeof(L) + 8)); CK(cudaMalloc(&dlab, N * 8)); CK(cudaMalloc(&dp0, N * sizeof(C)));
  CK(cudaMalloc(&dconf, N * sizeof(C))); CK(cudaMalloc(&dacc, N));
  CK(cudaMalloc(&dx, nb + 32)); CK(cudaMalloc(&dc, nb + 32)); CK(cudaMalloc(&dg, nb + 32)); CK(cudaMalloc(&dcg, nb + 32));
  CK(cudaMemcpy(dl, logits.data(), N * K * sizeof(L), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dlab, label.data(), N * 8, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dp0, p0.data(), N * sizeof(C), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dconf, conf.data(), N * sizeof(C), cudaMemcpyHostToDevice));
  CK(cudaMemset(dacc, 0x55, N));
  CK(cudaMemcpy(dx + moff, x.data(), nb, cudaMemcpyHostToDevice)); CK(cudaMemcpy(dc + moff, cand.data(), nb, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dg + moff, gr.data(), nb, cudaMemcpyHostToDevice)); CK(cudaMemcpy(dcg + moff, cg.data(), nb, cudaMemcpyHostToDevice));
  DType ld = sizeof(L) == 8 ? DType::Float64 : DType::Float32, cd = sizeof(C) == 8 ? DType::Float64 : DType::Float32;
  CK(confidence_accept(ld, dl, K, dlab, cd, dp0, dconf, thr, dx + moff, dc + moff, dg + moff, dcg + moff, row_bytes, dacc, N, 0));
  CK(cudaDeviceSynchronize());
  std::vector<uint8_t> acc(N), xo(nb), go(nb); std::vector<C> co(N);
  CK(cudaMemcpy(acc.data(), dacc, N, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(co.data(), dconf, N * sizeof(C), cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(xo.data(), dx + moff, nb, cudaMemcpyDeviceToHost)); CK(cudaMemcpy(go.data(), dg + moff, nb, cudaMemcpyDeviceToHost));
  int64_t bad = 0, nacc = 0;
  for (int64_t n = 0; n < N; ++n) {
    const L* lr = &logits[n * K];
    double m = -INFINITY; for (int64_t k = 0; k < K; ++k) { double l = (double)lr[k]; m = (l > m || std::isnan(l)) ? l : m; }
    double s = 0; for (int64_t k = 0; k < K; ++k) s += exp((double)lr[k] - m);
    int64_t c = label[n];
    double p = (c < 0 || c >= K) ? NAN : exp((double)lr[c] - m) / s;
    double margin = (double)p0[n] - p - thr;
    bool want = margin < 0;
    bool boundary = fabs(margin) < 1e-12;
    if (acc[n] > 1) { ++bad; continue; }  // not written
    bool got = acc[n] == 1;
    nacc += got;
    if (got != want && !boundary) { ++bad; continue; }
    if (got) {
      double e = fabs((double)co[n] - (double)(C)p);
      if (!(e <= 1e-13 + fabs(p) * (sizeof(C) == 4 ? 2.4e-7 : 1e-12))) ++bad;  // exp ulps + sum order
      if (memcmp(&xo[n * row_bytes], &cand[n * row_bytes], row_bytes) || memcmp(&go[n * row_bytes], &cg[n * row_bytes], row_bytes)) ++bad;
    } else {
      if (co[n] != (C)-7.0) ++bad;
      if (memcmp(&xo[n * row_bytes], &x[n * row_bytes], row_bytes) || memcmp(&go[n * row_bytes], &gr[n * row_bytes], row_bytes)) ++bad;
    }
  }
  char buf[200];
  snprintf(buf, sizeof buf, "conf L=%zu C=%zu N=%lld K=%lld row_bytes=%lld moff=%d: %lld bad rows (%lld accepted)",
           sizeof(L), sizeof(C), (long long)N, (long long)K, (long long)row_bytes, moff, (long long)bad, (long long)nacc);
  check(bad == 0, buf);
  cudaFree(dl); cudaFree(dlab); cudaFree(dp0); cudaFree(dconf); cudaFree(dacc); cudaFree(dx); cudaFree(dc); cudaFree(dg); cudaFree(dcg);
}

template <typename T>
static void test_simplex(int64_t N, int64_t K, int64_t P, int64_t D, bool misalign, std::mt19937& rng) {
  using O = typename H<T>::O;
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<T> v(N * K * D); for (auto& e : v) e = H<T>::from((float)nd(rng));
  std::vector<O> w(P * K); for (auto& e : w) e = (O)fabs(nd(rng));
  if (N * K * D > 0) v[0] = H<T>::from(-0.0f);
  std::vector<T> ref(N * P * D), got(N * P * D);
  for (int64_t n = 0; n < N; ++n) for (int64_t p = 0; p < P; ++p) for (int64_t i = 0; i < D; ++i) {
    O acc = 0;
    for (int64_t k = 0; k < K; ++k) { O prod = w[p * K + k] * H<T>::to(v[(n * K + k) * D + i]); acc = k == 0 ? prod : acc + prod; }
    ref[(n * P + p) * D + i] = H<T>::from(acc);
  }
  int off = misalign ? 1 : 0;
  T* dv = dalloc<T>(v.size()) + off; T* dout = dalloc<T>(ref.size()) + off; O* dw; CK(cudaMalloc(&dw, w.size() * sizeof(O) + 8));
  CK(cudaMemcpy(dv, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dw, w.data(), w.size() * sizeof(O), cudaMemcpyHostToDevice));
  CK(simplex_points(H<T>::dt(), dv, dw, dout, N, K, P, D, 0));
  CK(cudaDeviceSynchronize());
  CK(cudaMemcpy(got.data(), dout, got.size() * sizeof(T), cudaMemcpyDeviceToHost));
  size_t bad = 0; for (size_t i = 0; i < got.size(); ++i) bad += !same(got[i], ref[i]);
  char buf[200];
  snprintf(buf, sizeof buf, "simplex %s N=%lld K=%lld P=%lld D=%lld mis=%d: %zu/%zu differ", H<T>::name(), (long long)N,
           (long long)K, (long long)P, (long long)D, misalign, bad, got.size());
  check(bad == 0, buf);
  cudaFree(dv - off); cudaFree(dout - off); cudaFree(dw);
}

// ---------------------------------------------------------------------------------------------------
template <typename F>
static float time_ms(F f, int iters = 20) {
  cudaEvent_t a, b; CK(cudaEventCreate(&a)); CK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) f();
  CK(cudaEventRecord(a)); for (int i = 0; i < iters; ++i) f(); CK(cudaEventRecord(b)); CK(cudaEventSynchronize(b));
  float ms; CK(cudaEventElapsedTime(&ms, a, b)); return ms / iters;
}

template <typename T>
static void bench_orth(int64_t N, int64_t D) {
  size_t n = (size_t)(N * D);
  T *x = dalloc<T>(n), *t = dalloc<T>(n), *g = dalloc<T>(n), *a = dalloc<T>(n), *o = dalloc<T>(n);
  CK(cudaMemset(x, 0, n * sizeof(T))); CK(cudaMemset(t, 0, n * sizeof(T))); CK(cudaMemset(g, 0, n * sizeof(T))); CK(cudaMemset(a, 0, n * sizeof(T)));
  int64_t wsn = orthogonal_step_workspace(N, D); double* ws = nullptr; if (wsn) CK(cudaMalloc(&ws, wsn * 8));
  float ms = time_ms([&] { CK(orthogonal_step(H<T>::dt(), x, t, g, a, o, ws, N, D, 0.1, 0.01, 0, 1, 0)); });
  double gb = 6.0 * n * sizeof(T) / 1e9;
  printf("BENCH orth %s N=%lld D=%lld: %.3f ms, %.0f GB/s (6 x tensor bytes)\n", H<T>::name(), (long long)N, (long long)D, ms, gb / ms * 1e3);
  // Graph capture: must work (no sync / malloc inside).
  cudaStream_t s; CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t graph; cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  CK(orthogonal_step(H<T>::dt(), x, t, g, a, o, ws, N, D, 0.1, 0.01, 0, 1, s));
  CK(cudaStreamEndCapture(s, &graph)); CK(cudaGraphInstantiate(&exec, graph, 0));
  CK(cudaGraphLaunch(exec, s)); CK(cudaStreamSynchronize(s));
  cudaGraphExecDestroy(exec); cudaGraphDestroy(graph); cudaStreamDestroy(s);
  cudaFree(x); cudaFree(t); cudaFree(g); cudaFree(a); cudaFree(o); if (ws) cudaFree(ws);
}

static void bench_copy(size_t bytes) {
  void *a, *b; CK(cudaMalloc(&a, bytes)); CK(cudaMalloc(&b, bytes));
  float ms = time_ms([&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0)); });
  printf("BENCH memcpy %zu MB: %.3f ms, %.0f GB/s (read+write)\n", bytes >> 20, ms, 2.0 * bytes / 1e9 / ms * 1e3);
  cudaFree(a); cudaFree(b);
}

static void bench_simplex(int64_t N, int64_t K, int64_t P, int64_t D) {
  float *v = dalloc<float>(N * K * D), *w = dalloc<float>(P * K), *o = dalloc<float>(N * P * D);
  CK(cudaMemset(v, 0, N * K * D * 4)); CK(cudaMemset(w, 0, P * K * 4));
  float ms = time_ms([&] { CK(simplex_points(DType::Float32, v, w, o, N, K, P, D, 0)); });
  double gb = (double)(N * K * D + N * P * D) * 4 / 1e9;
  printf("BENCH simplex f32 N=%lld K=%lld P=%lld D=%lld: %.3f ms, %.0f GB/s (min bytes)\n", (long long)N, (long long)K, (long long)P, (long long)D, ms, gb / ms * 1e3);
  cudaFree(v); cudaFree(w); cudaFree(o);
}

static void bench_conf(int64_t N, int64_t K, int64_t row_bytes) {
  float* l = dalloc<float>(N * K); int64_t* lab; float *p0, *conf; bool* acc; uint8_t *x, *c, *g, *cg;
  CK(cudaMalloc(&lab, N * 8)); CK(cudaMalloc(&p0, N * 4)); CK(cudaMalloc(&conf, N * 4)); CK(cudaMalloc(&acc, N));
  CK(cudaMalloc(&x, N * row_bytes)); CK(cudaMalloc(&c, N * row_bytes)); CK(cudaMalloc(&g, N * row_bytes)); CK(cudaMalloc(&cg, N * row_bytes));
  CK(cudaMemset(l, 0, N * K * 4)); CK(cudaMemset(lab, 0, N * 8)); CK(cudaMemset(p0, 0, N * 4));  // p0 = 0 -> all accepted
  float ms = time_ms([&] { CK(confidence_accept(DType::Float32, l, K, lab, DType::Float32, p0, conf, 0.5, x, c, g, cg, row_bytes, acc, N, 0)); });
  double gb = (double)(N * K * 4 + 4 * N * row_bytes) / 1e9;
  printf("BENCH conf N=%lld K=%lld row_bytes=%lld (all accepted): %.3f ms, %.0f GB/s (min bytes)\n", (long long)N, (long long)K, (long long)row_bytes, ms, gb / ms * 1e3);
  cudaFree(l); cudaFree(lab); cudaFree(p0); cudaFree(conf); cudaFree(acc); cudaFree(x); cudaFree(c); cudaFree(g); cudaFree(cg);
}

int main(int argc, char** argv) {
  bool bench = argc > 1 && !strcmp(argv[1], "bench");
  std::mt19937 rng(1234);
  const int64_t Ds[] = {1, 3, 8, 10, 64, 784, 1000, 2048, 3072, 4096, 4100, 6000, 8192, 8200, 20000, 150528};
  for (int64_t D : Ds) {
    int64_t N = D >= 20000 ? 5 : (D >= 4096 ? 19 : 300);
    for (int mis = 0; mis < 2; ++mis) for (int dy = 0; dy < 2; ++dy) {
      test_orth<float>(N, D, mis, dy, rng); test_orth<double>(N, D, mis, dy, rng);
      test_orth<__half>(N, D, mis, dy, rng); test_orth<__nv_bfloat16>(N, D, mis, dy, rng);
    }
  }
  test_orth<float>(70001, 12, false, true, rng);  // many rows per block, partial last block
  test_orth<float>(1, 4194305, false, true, rng);  // > kMaxChunks * kChunk: grown chunks
  test_orth<__half>(2, 4194305 + 7, true, true, rng);
  const int64_t RB[] = {0, 1, 3, 4, 12, 16, 3136, 16384, 16400, 40000, 602112};
  for (int64_t rb : RB) for (int moff : {0, 1, 4}) {
    test_conf<float, float>(rb > 100000 ? 9 : 64, 10, rb, moff, rng);
    test_conf<double, double>(rb > 100000 ? 9 : 64, 1000, rb, moff, rng);
  }
  test_conf<float, double>(200, 1001, 3136, 0, rng); test_conf<double, float>(200, 1, 64, 0, rng);
  for (int64_t D : {1, 7, 784, 3000, 5000, 70000}) for (int mis = 0; mis < 2; ++mis) for (int64_t K : {0, 1, 3, 11}) {
    test_simplex<float>(3, K, 4, D, mis, rng); test_simplex<double>(3, K, 4, D, mis, rng);
    test_simplex<__half>(2, K, 5, D, mis, rng); test_simplex<__nv_bfloat16>(2, K, 3, D, mis, rng);
  }
  printf("%d passed, %d failed\n", g_pass, g_fail);
  if (bench) {
    bench_copy(1ull << 30);
    bench_orth<float>(100000, 784); bench_orth<float>(32768, 3072); bench_orth<float>(16384, 6000);
    bench_orth<float>(256, 150528); bench_orth<float>(8, 150528); bench_orth<__nv_bfloat16>(32768, 3072);
    bench_orth<__half>(256, 150528); bench_orth<double>(50000, 784); bench_orth<double>(256, 150528);
    bench_simplex(1000, 4, 16, 3072); bench_simplex(64, 3, 8, 150528);
    bench_conf(100000, 10, 3136); bench_conf(100000, 1000, 3136); bench_conf(256, 1000, 602112);
  }
  return g_fail ? 1 : 0;
}
