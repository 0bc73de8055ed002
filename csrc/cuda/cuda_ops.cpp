// CUDA registration of the lst_fast_kernels::* kernels (the public ops, torch.ops.lst_fast.*, are defined
// in lst_fast/ops.py and call them) and the module lst_fast._C_cuda<N>: memory-safety guards, layout
// handling, device guard and stream, then the plain launchers of launchers.h. Stable ABI only (see
// ../lst_fast.cpp); this file is compiled by the host compiler, so no torch header reaches nvcc.
#include <Python.h>

#include <torch/csrc/inductor/aoti_torch/c/shim.h>  // aoti_torch_get_current_cuda_stream (USE_CUDA)
#include <torch/csrc/stable/accelerator.h>

#include "../kernel_guards.h"
#include "launchers.h"

// The module is named after the CUDA major version it is built with (_C_cuda12, _C_cuda13): setup.py
// passes the name as TORCH_EXTENSION_NAME.
#define LST_FAST_JOIN2(a, b) a##b
#define LST_FAST_JOIN(a, b) LST_FAST_JOIN2(a, b)
#define LST_FAST_STRING2(a) #a
#define LST_FAST_STRING(a) LST_FAST_STRING2(a)

extern "C" {
// An empty module: `import lst_fast._C_cuda<N>` only has to load the shared library (after lst_fast._C).
PyMODINIT_FUNC LST_FAST_JOIN(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      LST_FAST_STRING(TORCH_EXTENSION_NAME),
      "lst_fast CUDA kernels (torch.ops.lst_fast_kernels; the public ops are in lst_fast.ops)",
      -1,
      nullptr,
  };
  return PyModule_Create(&module_def);
}
}

namespace lst_fast {
namespace {

cuda::DType to_launcher_dtype(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return cuda::DType::Float32;
    case ScalarType::Double: return cuda::DType::Float64;
    case ScalarType::Half: return cuda::DType::Float16;
    case ScalarType::BFloat16: return cuda::DType::BFloat16;
    default: break;
  }
  throw std::runtime_error(message("lst_fast: unsupported dtype ", torch::headeronly::toString(t)));
}

void check_launch(cudaError_t err, const char* op) {
  LST_CHECK(err == cudaSuccess, op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

// torch's current stream on the tensor's device (the C shim's call; the stable C++ Stream wrapper has
// no native handle before torch 2.13).
cudaStream_t current_stream(const Tensor& t) {
  void* stream = nullptr;
  LST_CHECK(aoti_torch_get_current_cuda_stream(t.get_device_index(), &stream) == AOTI_TORCH_SUCCESS,
            "lst_fast: could not get the current CUDA stream");
  return static_cast<cudaStream_t>(stream);
}

using torch::stable::accelerator::DeviceGuard;

Tensor orthogonal_step_cuda(Tensor x, Tensor target, Tensor grad, Tensor adv, double step_size,
                            double adv_step_size, double lo, double hi) {
  constexpr const char* op = "lst_fast_kernels::orthogonal_step";
  guard_orthogonal_step(x, target, grad, adv, DeviceType::CUDA);
  const DeviceGuard guard(x.get_device_index());

  Tensor out = torch::stable::empty_like(x);
  if (x.numel() == 0) return out;

  RowDenseViews v({x, target, grad, adv, out}, /*write_only=*/1);  // in place for contiguous and channels-last
  const int64_t n = x.size(0);
  const int64_t d = x.numel() / n;
  const int64_t ws_size = cuda::orthogonal_step_workspace(n, d);
  // From the caching allocator: no cudaMalloc in steady state and safe inside CUDA graph capture.
  Tensor workspace = new_tensor(x, {std::max<int64_t>(ws_size, 1)}, ScalarType::Double);
  check_launch(cuda::orthogonal_step(to_launcher_dtype(x.scalar_type()), v[0].const_data_ptr(), v[1].const_data_ptr(),
                                     v[2].const_data_ptr(), v[3].mutable_data_ptr(), v[4].mutable_data_ptr(),
                                     workspace.mutable_data_ptr<double>(), n, d, step_size, adv_step_size, lo, hi,
                                     current_stream(x)),
               op);
  v.write_back(3);
  v.write_back(4);
  return out;
}

Tensor confidence_accept_cuda(Tensor logits, Tensor label, Tensor p0, double threshold, Tensor x,
                              Tensor candidate, Tensor grad, Tensor candidate_grad, Tensor confidence) {
  constexpr const char* op = "lst_fast_kernels::confidence_accept";
  guard_confidence_accept(logits, label, p0, x, candidate, grad, candidate_grad, confidence, DeviceType::CUDA);
  const DeviceGuard guard(x.get_device_index());

  const int64_t n = x.size(0);
  Tensor accepted = new_tensor(label, {n}, ScalarType::Bool);
  if (n == 0) return accepted;

  // Reduced-precision logits are widened once (N x K, tiny) so the kernel has two logit types only.
  const Tensor logits_w = torch::stable::contiguous(
      logits.scalar_type() == ScalarType::Double ? logits : torch::stable::to(logits, ScalarType::Float));
  const Tensor label_c = torch::stable::contiguous(label);
  const Tensor p0_c = torch::stable::contiguous(p0);
  Tensor conf_w = torch::stable::contiguous(confidence);

  RowDenseViews v({x, candidate, grad, candidate_grad});
  const int64_t row_bytes = x.numel() / n * static_cast<int64_t>(x.element_size());

  check_launch(cuda::confidence_accept(to_launcher_dtype(logits_w.scalar_type()), logits_w.const_data_ptr(),
                                       logits_w.size(1), label_c.const_data_ptr<int64_t>(),
                                       to_launcher_dtype(p0_c.scalar_type()), p0_c.const_data_ptr(),
                                       conf_w.mutable_data_ptr(), threshold, v[0].mutable_data_ptr(),
                                       v[1].const_data_ptr(), v[2].mutable_data_ptr(), v[3].const_data_ptr(), row_bytes,
                                       accepted.mutable_data_ptr<bool>(), n, current_stream(x)),
               op);
  if (conf_w.data_ptr() != confidence.data_ptr()) torch::stable::copy_(confidence, conf_w);
  v.write_back(0);
  v.write_back(2);
  return accepted;
}

Tensor simplex_points_cuda(Tensor vertices, Tensor weights) {
  constexpr const char* op = "lst_fast_kernels::simplex_points";
  guard_simplex_points(vertices, weights, DeviceType::CUDA);
  const DeviceGuard guard(vertices.get_device_index());
  Tensor out = new_tensor(vertices, simplex_points_shape(vertices, weights), vertices.scalar_type());
  if (out.numel() == 0) return out;

  const Tensor v = torch::stable::contiguous(vertices);
  const Tensor w = simplex_weights_in_opmath(vertices, weights);
  const int64_t n = v.size(0), k = v.size(1), p = w.size(0);
  check_launch(cuda::simplex_points(to_launcher_dtype(v.scalar_type()), v.const_data_ptr(), w.const_data_ptr(),
                                    out.mutable_data_ptr(), n, k, p, v.numel() / (n * k), current_stream(vertices)),
               op);
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(lst_fast_kernels, CUDA, m) {
  m.impl("orthogonal_step", TORCH_BOX(&orthogonal_step_cuda));
  m.impl("confidence_accept", TORCH_BOX(&confidence_accept_cuda));
  m.impl("simplex_points", TORCH_BOX(&simplex_points_cuda));
}

}  // namespace lst_fast
