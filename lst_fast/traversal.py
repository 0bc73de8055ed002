"""Level Set Traversal (SPEC.md section 1) with one forward+backward per iteration.

The paper's loop evaluates the model twice per iteration: forward+backward at x for the gradient, then
a forward at the candidate for the acceptance test. Here the candidate's forward+backward serves both:
its logits decide acceptance and, when accepted, its gradient is the next iteration's; when rejected,
the gradient at x is still the one in hand. The iterates are the same (bit for bit in fp32 on the CPU).
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from lst_fast import batching, ops, prepared_model, validation
from lst_fast.prepared_model import full_fp32_matmuls
from lst_fast.reference import class_probability
from lst_fast.result import TraversalResult
from lst_fast.version import __version__


_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # the former from torch 2.5


@contextlib.contextmanager
def cudnn_autotune() -> Iterator[None]:
    """bf16 mode: let cuDNN time its algorithms once per shape (LST repeats one shape hundreds of times);
    exact mode leaves this off, since the choice may differ between runs."""
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and restore each one's own flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


class LevelSetTraversal:
    """Configure once, call on batches: ``LevelSetTraversal(model, iterations=400)(x, y)``.

    Args:
        model: classifier returning logits for images in `bounds` (after the optional mean/std). It is
            never modified (bf16 mode runs a cached working copy; see lst_fast.prepared_model).
        step_size: eta, the step along the part of (target - x) orthogonal to the gradient.
        iterations: T, the number of steps tried.
        threshold: delta; a step is accepted while p0 - p < delta for the source-class confidence p.
        adv_step_size: eps, the accumulated adversarial term's step (its bound is eps); 0 disables it.
        init_noise: a, the start is clamp(x + U(-a, a)); 0 starts at x.
        bounds: (lo, hi), the valid image range; every iterate stays inside.
        mean, std: per-channel normalization applied inside: the model sees (x - mean) / std.
        precision: "fp32" (exact: SPEC section 1 to the bit, TF32 off) or "bf16" (fast: the model runs in
            bfloat16 with BatchNorm folded and channels-last; the iterate and all LST arithmetic stay fp32;
            the returned confidences are re-evaluated with the model as given).
        batch_size: images per batch; default automatic (lst_fast.batching): on a GPU what free memory
            holds, on the CPU cache-sized batches (a rule of the model and image shape only).
        compile_model: with precision="bf16", run the working copy through torch.compile (compiles on the
            first call; pays off on GPUs for long runs; on 2 CPU cores it measured slower).
        graph: on CUDA, capture one whole iteration (forward, backward, step, accept) in a CUDA graph and
            replay it; the iterates are those of the eager loop.
        record_every: when > 0, record the iterate and its confidences every that many iterations.
        record_device: where recorded images go (e.g. "cpu" so long walks do not fill GPU memory);
            default the input's device.
        progress: show a progress bar.
        backend: "auto" (compiled kernels where available), "native" (require them) or "reference"
            (pure PyTorch).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        step_size: float = 1e-2,
        iterations: int = 400,
        threshold: float = 0.2,
        adv_step_size: float = 2e-3,
        init_noise: float = 2 / 255,
        bounds: Tuple[float, float] = (0.0, 1.0),
        mean: Optional[Union[Sequence[float], Tensor]] = None,
        std: Optional[Union[Sequence[float], Tensor]] = None,
        precision: str = "fp32",
        batch_size: Optional[int] = None,
        compile_model: bool = False,
        graph: bool = False,
        record_every: int = 0,
        record_device: Optional[Union[str, torch.device]] = None,
        progress: bool = False,
        backend: str = "auto",
    ) -> None:
        validation.check_model(model)
        self.model = model
        self.step_size = validation.check_positive("step_size", step_size)
        self.iterations = validation.check_count("iterations", iterations)
        self.threshold = validation.check_non_negative("threshold", threshold)
        self.adv_step_size = validation.check_non_negative("adv_step_size", adv_step_size)
        self.init_noise = validation.check_non_negative("init_noise", init_noise)
        self.bounds = validation.check_bounds(bounds)
        self.mean, self.std = mean, std
        self.precision = precision
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None (automatic), got {batch_size!r}")
        self.batch_size = batch_size
        for name, flag in (("compile_model", compile_model), ("graph", graph)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        prepared_model.check_precision(precision, compile_model)
        self.compile_model = compile_model
        self.graph = graph
        self.record_every = validation.check_count("record_every", record_every)
        self.record_device = None if record_device is None else torch.device(record_device)
        self.progress = bool(progress)
        if backend not in ops.BACKENDS:
            raise ValueError(f"backend must be one of {ops.BACKENDS}, got {backend!r}")
        self.backend = backend

    def config(self) -> dict:
        """The settings, as plain JSON-able values."""
        as_list = lambda v: None if v is None else torch.as_tensor(v).flatten().tolist()  # noqa: E731
        return {
            "step_size": self.step_size,
            "iterations": self.iterations,
            "threshold": self.threshold,
            "adv_step_size": self.adv_step_size,
            "init_noise": self.init_noise,
            "bounds": list(self.bounds),
            "mean": as_list(self.mean),
            "std": as_list(self.std),
            "precision": self.precision,
            "batch_size": self.batch_size,
            "compile_model": self.compile_model,
            "graph": self.graph,
            "record_every": self.record_every,
            "backend": self.backend,
        }

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}(model={type(self.model).__name__}, {settings})"

    def __call__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        label: Optional[Tensor] = None,
        target_label: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> TraversalResult:
        """Traverse from each source image in x toward its target image in y.

        Args:
            x: source images (N, C, H, W) in `bounds`.
            y: target images (N, C, H, W), or one image (C, H, W) for every source.
            label: class whose confidence is held (N,); default the model's prediction on x.
            target_label: class of the targets, for the recorded target confidence; default the model's
                prediction on y (computed only when record_every > 0).
            generator: random generator for the initial noise (on x's device), for reproducible runs.
        """
        validation.check_images(x, y, self.bounds)
        if generator is not None and generator.device.type != x.device.type:
            raise ValueError(f"generator is on {generator.device} but x is on {x.device}")
        backend_flags = full_fp32_matmuls() if self.precision == "fp32" else cudnn_autotune()
        with eval_mode(self.model), torch.inference_mode(False), backend_flags:
            return self._traverse(x, y, label, target_label, generator)

    # -- setup ----------------------------------------------------------------------------------------

    @staticmethod
    def _forward_backward(
        forward: Callable[[Tensor], Tensor], x: Tensor, label: Tensor, layout: torch.memory_format
    ) -> Tuple[Tensor, Tensor]:
        """Logits at x and the gradient of the summed cross-entropy for `label` with respect to x."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = forward(x).to(x.dtype)
            loss = F.cross_entropy(logits, label, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)  # parameters' .grad stay untouched
        # Autograd may hand back an expanded or otherwise strided gradient; the ops want x's layout.
        return logits.detach(), grad.contiguous(memory_format=layout)

    @staticmethod
    def _check_logits(logits: Tensor, n: int) -> None:
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"model must return logits of shape ({n}, num_classes), got {got}")
        if not bool(torch.isfinite(logits).all()):
            raise ValueError("model returned NaN or Inf logits for the source images x")

    def _traverse(self, x_in: Tensor, y_in: Tensor, label, target_label, generator) -> TraversalResult:
        n = x_in.shape[0]
        device = x_in.device
        work_dtype = torch.float64 if x_in.dtype == torch.float64 else torch.float32
        lo, hi = self.bounds
        config = {**self.config(), "lst_fast": __version__, "torch": torch.__version__, "device": str(device)}

        # Working copies in x's memory layout (contiguous or channels-last), the target materialized.
        layout = torch.channels_last if (x_in.is_contiguous(memory_format=torch.channels_last)
                                         and not x_in.is_contiguous()) else torch.contiguous_format
        x_src = x_in.detach().to(dtype=work_dtype, memory_format=layout, copy=True)
        x_tgt = y_in.detach().to(work_dtype).expand_as(x_src).contiguous(memory_format=layout)

        if n == 0:
            empty = torch.empty(0, device=device)
            return TraversalResult(
                images=x_in.detach().clone(), label=torch.empty(0, dtype=torch.long, device=device),
                initial_confidence=empty, confidence=empty.clone(),
                accepted_steps=torch.empty(0, dtype=torch.long, device=device),
                source_correct=torch.empty(0, dtype=torch.bool, device=device), config=config)

        norm = validation.normalization(self.mean, self.std, x_src.shape[1], device, work_dtype)
        probe = x_src[: min(n, 4)]
        prepared = prepared_model.prepare(self.model, self.precision, probe if norm is None
                                          else (probe - norm[0]) / norm[1], compile_model=self.compile_model)
        config["model_copy"] = prepared.describe()
        forward = prepared_model.forward_function(prepared, norm)
        eager_forward = prepared_model.forward_function(prepared.eager(), norm)  # one-off calls: no compile
        # bf16: labels and the reported confidences come from the model as given, in its own precision.
        as_given = None if self.precision == "fp32" else prepared_model.forward_function(
            prepared_model.as_given(self.model, work_dtype), norm)

        # The initial noise is drawn for the whole set at once, so batching does not change it.
        x_start = x_src.clone(memory_format=torch.preserve_format)
        if self.init_noise > 0:
            noise = torch.rand(x_start.shape, generator=generator, device=device, dtype=work_dtype)
            x_start = (x_start + (noise * 2 - 1) * self.init_noise).clamp(lo, hi).contiguous(memory_format=layout)
        else:
            x_start = x_start.clamp(lo, hi)
        with torch.no_grad():  # one image tells the class count, so labels are checked before any walk
            first = eager_forward(x_src[:1])
        self._check_logits(first, 1)
        label = validation.check_label(label, n, first.shape[1], device)
        if target_label is not None:
            target_label = validation.check_label(target_label, n, first.shape[1], device, name="target_label")

        size = self._resolve_batch_size(n, eager_forward, x_start, layout)
        bar = _progress_bar(self.iterations * math.ceil(n / size), self.progress)
        parts: List[dict] = []
        start = 0
        try:
            while start < n:
                part = slice(start, min(n, start + size))
                try:
                    parts.append(self._walk(
                        forward, as_given, x_src[part], x_start[part], x_tgt[part],
                        None if label is None else label[part],
                        None if target_label is None else target_label[part], layout, bar))
                except _OUT_OF_MEMORY as error:
                    if self.batch_size is not None or size == 1:
                        raise self._out_of_memory(error, size, device) from error
                    # The automatic size was an estimate: halve it and redo this batch; finished ones stay.
                    size //= 2
                    warnings.warn(f"LST ran out of {device.type} memory; continuing with batches of {size}",
                                  RuntimeWarning, stacklevel=3)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    if bar is not None:
                        bar.reset(total=self.iterations * (len(parts) + math.ceil((n - start) / size)))
                        bar.update(self.iterations * len(parts))
                    continue
                start = part.stop
        finally:
            if bar is not None:
                bar.close()
        config["batch_size_used"] = size
        return _concatenate(parts, x_in.dtype, config, self.record_every > 0)

    @staticmethod
    def _out_of_memory(error: Exception, size: int, device: torch.device) -> Exception:
        if size == 1:
            advice = "even one image does not fit; free memory or use a smaller model input"
        else:
            advice = f"pass batch_size={size // 2} or smaller"
        return _OUT_OF_MEMORY(
            f"LST on a batch of {size} images ran out of {device.type} memory; the model's forward and "
            f"backward need it for every iteration: {advice}. ({error})")

    def _resolve_batch_size(self, n: int, forward, x_start: Tensor, layout) -> int:
        """batch_size, or the automatic size (see lst_fast.batching): measured with the uncompiled copy,
        so the probes' shapes trigger no compile."""
        if self.batch_size is not None:
            return min(self.batch_size, n)
        cpu = x_start.device.type == "cpu"
        if n <= (batching.CPU_MIN_BATCH if cpu else batching.PROBE_IMAGES):
            return n

        def run_probe(k: int) -> None:
            images = x_start[:k]
            with torch.no_grad():
                label = forward(images).argmax(1)
            self._forward_backward(forward, images, label, layout)

        try:
            if cpu:
                per_image = batching.saved_bytes_per_image(run_probe)
                return batching.cpu_batch_size(per_image, n, batching.available_memory())
            return batching.measure_cuda_batch_size(run_probe, n, x_start.device)
        except _OUT_OF_MEMORY:  # not even the probe's few images fit: one at a time, if that fits
            if not cpu:
                torch.cuda.empty_cache()
            return 1

    # -- the loop -------------------------------------------------------------------------------------

    def _walk(self, forward, as_given, x_src, x_start, x_tgt, label, target_label, layout, bar) -> dict:
        """LST on one batch; returns its per-sample outputs."""
        n, device = x_src.shape[0], x_src.device
        with torch.no_grad():
            logits0 = forward(x_src)
            self._check_logits(logits0, n)
            given0 = logits0 if as_given is None else as_given(x_src)
        num_classes = logits0.shape[1]
        prediction = given0.argmax(1)
        source_correct = torch.ones(n, dtype=torch.bool, device=device) if label is None else prediction == label
        label = prediction if label is None else label
        p0 = class_probability(logits0, label)  # float64, like the running confidence

        x = x_start.clone(memory_format=torch.preserve_format)
        adv = torch.zeros_like(x)
        logits, grad = self._forward_backward(forward, x, label, layout)
        confidence = class_probability(logits, label)
        accepted_steps = torch.zeros(n, dtype=torch.long, device=device)

        recorder = None
        if self.record_every:
            recorder = _Recorder(self, x_tgt, target_label, as_given or forward, n, num_classes, device)
            recorder.record(0, x, confidence, logits)

        def iteration() -> None:
            """One LST iteration on the loop's tensors, all updated in place (so a CUDA graph can replay it)."""
            candidate = ops.orthogonal_step(
                x, x_tgt, grad, adv, step_size=self.step_size, adv_step_size=self.adv_step_size,
                bounds=self.bounds, backend=self.backend)
            cand_logits, cand_grad = self._forward_backward(forward, candidate, label, layout)
            accepted = ops.confidence_accept(
                cand_logits, label, p0, self.threshold, x, candidate, grad, cand_grad, confidence,
                backend=self.backend)
            accepted_steps.add_(accepted)
            if recorder is not None:
                logits.copy_(torch.where(accepted[:, None], cand_logits, logits))

        run = _graphed(iteration, device, self.iterations) if self.graph and device.type == "cuda" else iteration
        report_every = max(1, self.iterations // 20)
        for it in range(1, self.iterations + 1):
            run()
            if recorder is not None and (it % self.record_every == 0 or it == self.iterations):
                recorder.record(it, x, confidence, logits)
            if bar is not None:
                bar.update(1)
                if it % report_every == 0 or it == self.iterations:  # the only host syncs in the loop
                    bar.set_postfix(accept=f"{float(accepted_steps.sum()) / (n * it):.2f}",
                                    conf=f"{float(confidence.mean()):.3f}")

        final_confidence = confidence
        initial_confidence = p0
        if as_given is not None:  # report what the model as given says of the end points
            with torch.no_grad():
                final_confidence = class_probability(as_given(x), label)
                initial_confidence = class_probability(given0, label)
        out = {"images": x, "label": label, "initial_confidence": initial_confidence.float(),
               "confidence": final_confidence.float(), "accepted_steps": accepted_steps,
               "source_correct": source_correct}
        if recorder is not None:
            out.update(recorder.tensors())
        return out


def _graphed(iteration: Callable[[], None], device: torch.device, iterations: int,
             warmup: int = 3) -> Callable[[], None]:
    """`iteration` replayed from a CUDA graph. The first `warmup` calls run eagerly on a side stream (as the
    capture rules want, and they are real iterations); the capture itself runs nothing."""
    state = {"calls": 0, "graph": None}
    side = torch.cuda.Stream(device)

    def run() -> None:
        state["calls"] += 1
        if state["graph"] is not None:
            state["graph"].replay()
            return
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            iteration()
        torch.cuda.current_stream(device).wait_stream(side)
        if state["calls"] == warmup and iterations > warmup:
            state["graph"] = _capture(iteration)

    return run


def _capture(fn: Callable[[], None]) -> "torch.cuda.CUDAGraph":
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def _concatenate(parts: List[dict], dtype: torch.dtype, config: dict, traced: bool) -> TraversalResult:
    def cat(name: str, dim: int = 0) -> Tensor:
        return parts[0][name] if len(parts) == 1 else torch.cat([p[name] for p in parts], dim)

    result = TraversalResult(
        images=cat("images").to(dtype=dtype), label=cat("label"), initial_confidence=cat("initial_confidence"),
        confidence=cat("confidence"), accepted_steps=cat("accepted_steps"),
        source_correct=cat("source_correct"), config=config)
    if traced:
        result.trace_iterations = parts[0]["trace_iterations"]
        result.trace_confidence = cat("trace_confidence", 1)
        result.trace_target_confidence = cat("trace_target_confidence", 1)
        result.trace_images = cat("trace_images", 1).to(dtype)
    return result


class _Recorder:
    """Keeps the iterate and its source/target-class confidences every `record_every` iterations."""

    def __init__(self, lst: LevelSetTraversal, x_tgt, target_label, forward, n, num_classes, device):
        if target_label is None:
            with torch.no_grad():
                target_label = forward(x_tgt).argmax(1)
        self.target_label = validation.check_label(target_label, n, num_classes, device, name="target_label")
        self.device = lst.record_device or device
        self.iterations: List[int] = []
        self.confidence: List[Tensor] = []
        self.target_confidence: List[Tensor] = []
        self.images: List[Tensor] = []

    def record(self, iteration: int, x: Tensor, confidence: Tensor, logits: Tensor) -> None:
        self.iterations.append(iteration)
        self.confidence.append(confidence.float().clone())
        self.target_confidence.append(class_probability(logits, self.target_label).float())
        self.images.append(x.to(self.device, copy=True))

    def tensors(self) -> dict:
        return {"trace_iterations": torch.tensor(self.iterations, dtype=torch.long),
                "trace_confidence": torch.stack(self.confidence),
                "trace_target_confidence": torch.stack(self.target_confidence),
                "trace_images": torch.stack(self.images)}


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="LST", unit="it", dynamic_ncols=True)


def traverse(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    label: Optional[Tensor] = None,
    step_size: float = 1e-2,
    iterations: int = 400,
    threshold: float = 0.2,
    adv_step_size: float = 2e-3,
    init_noise: float = 2 / 255,
    bounds: Tuple[float, float] = (0.0, 1.0),
    mean: Optional[Union[Sequence[float], Tensor]] = None,
    std: Optional[Union[Sequence[float], Tensor]] = None,
    precision: str = "fp32",
    batch_size: Optional[int] = None,
    compile_model: bool = False,
    graph: bool = False,
    record_every: int = 0,
    record_device: Optional[Union[str, torch.device]] = None,
    target_label: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    backend: str = "auto",
) -> TraversalResult:
    """Level Set Traversal from source images x toward target images y (see LevelSetTraversal).

    Returns a TraversalResult: the final images, which still get `label` (default: the model's
    prediction on x) with confidence within `threshold` of the clean source's, plus per-sample
    diagnostics, in batch order.
    """
    lst = LevelSetTraversal(
        model, step_size=step_size, iterations=iterations, threshold=threshold, adv_step_size=adv_step_size,
        init_noise=init_noise, bounds=bounds, mean=mean, std=std, precision=precision, batch_size=batch_size,
        compile_model=compile_model, graph=graph, record_every=record_every,
        record_device=record_device, progress=progress, backend=backend)
    return lst(x, y, label=label, target_label=target_label, generator=generator)

