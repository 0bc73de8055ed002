// Schemas of lst_fast's compiled kernels, all in one place, and the module lst_fast._C (the CPU kernels,
// cpu/*.cpp). The CUDA kernels live in a module of their own, lst_fast._C_cuda<N> (cuda/cuda_ops.cpp), so
// that this one loads on a CPU-only torch. Both use the LibTorch stable ABI only: built with
// TORCH_TARGET_VERSION = 2.10, one binary loads on every torch from 2.10 on. Importing the module loads
// the library; its static initializers register the kernels with the dispatcher (STABLE_TORCH_LIBRARY),
// so there is nothing to bind with pybind11.
//
// The kernels are registered as lst_fast_kernels::*. The public operators, torch.ops.lst_fast.*, are
// defined in lst_fast/ops.py with the same schemas: they check the arguments (lst_fast/backends/op_checks.py, the
// one written contract), then call these kernels or, without them, the pure-PyTorch reference. Called
// directly, a kernel only refuses what would take it outside its tensors' memory (kernel_guards.h).
#include <Python.h>

#include "kernel_guards.h"

extern "C" {
// An empty module: `import lst_fast._C` only has to load the shared library.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "lst_fast CPU kernels (torch.ops.lst_fast_kernels; the public ops are in lst_fast.ops)",
      -1,    // size of per-interpreter state
      nullptr,
  };
  return PyModule_Create(&module_def);
}
}

STABLE_TORCH_LIBRARY(lst_fast_kernels, m) {
  // The semantics are those of the public ops (lst_fast/ops.py, lst_fast/backends/reference.py, cuda/launchers.h).
  m.def(
      "orthogonal_step(Tensor x, Tensor target, Tensor grad, Tensor(a!) adv, float step_size, "
      "float adv_step_size, float lo, float hi) -> Tensor");
  m.def(
      "confidence_accept(Tensor logits, Tensor label, Tensor p0, float threshold, Tensor(a!) x, "
      "Tensor candidate, Tensor(b!) grad, Tensor candidate_grad, Tensor(c!) confidence) -> Tensor");
  m.def("simplex_points(Tensor vertices, Tensor weights) -> Tensor");
  // A CPU kernel only (cpu/ssim_kernel.cpp), called by lst_fast.metrics.ssim on CPU tensors; not a public op:
  // elsewhere the metric is pure PyTorch.
  m.def("ssim(Tensor x, Tensor y, Tensor window, float c1, float c2) -> Tensor");
}
