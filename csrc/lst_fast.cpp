// Operator schemas of lst_fast, all in one place. Each backend registers its kernels in its own file
// (cpu/*.cpp, cuda/cuda_ops.cpp). Importing `lst_fast._C` loads this library; its static initializers
// register the ops with the dispatcher, so there is nothing to bind with pybind11.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// An empty module: `import lst_fast._C` only has to load the shared library.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "lst_fast native operators (registered under torch.ops.lst_fast)",
      -1,    // size of per-interpreter state
      nullptr,
  };
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(lst_fast, m) {
  // Fused LST step: projects (target - x) orthogonally to grad per sample, updates the accumulated
  // adversarial term `adv` in place and returns the clamped candidate.
  m.def(
      "orthogonal_step(Tensor x, Tensor target, Tensor grad, Tensor(a!) adv, float step_size, "
      "float adv_step_size, float lo, float hi) -> Tensor");
  // Confidence-constrained accept: where p0 - softmax(logits)[label] < threshold, copies the candidate
  // and its gradient into x and grad and its confidence into `confidence`. Returns the accepted mask.
  m.def(
      "confidence_accept(Tensor logits, Tensor label, Tensor p0, float threshold, Tensor(a!) x, "
      "Tensor candidate, Tensor(b!) grad, Tensor candidate_grad, Tensor(c!) confidence) -> Tensor");
  // Batched convex combinations: vertices (N, K, *), weights (P, K) -> (N * P, *).
  m.def("simplex_points(Tensor vertices, Tensor weights) -> Tensor");
}
