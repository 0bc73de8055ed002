"""The model LST runs, prepared for a precision, without ever modifying the user's object.

precision="fp32" (exact mode): the user's model itself. LST asks autograd only for the input gradient,
so parameters and their .grad are untouched; a copy with frozen parameters measured no faster (CPU,
interleaved runs) and would double the weights' memory, so there is none.

precision="bf16": a deep copy in eval mode with frozen parameters, BatchNorm folded into the convolution
before it, in place in the copy (checked on the images about to be traversed; left unfolded if the folded
model disagrees or cannot be traced), weights and buffers in bfloat16, channels-last memory when the model has 2-d
convolutions, and on the CPU the math attention kernel (faster in bf16 there). The iterate, the
adversarial term, the gradient handed to the step and every LST reduction stay in fp32.
compile_model=True also wraps the copy in torch.compile (static shapes).

The copy is built anew for each call (each `traverse`, each `LevelSetTraversal` call, each geometry
pass) and never kept across calls: any change to the model between calls (weights, a swapped
parameter-free submodule, a plain attribute forward reads, a hook, a patched method) is always seen. A
cache keyed on a fingerprint of the model cannot see every such change (closures, globals, class-level
patches), and building the copy costs about 0.2-0.5% of a 400-iteration walk (bench/RESULTS.md,
2026-11-29; docs/NOTES.md).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from lst_fast.backends.machine import BF16_EMULATED_WARNING, cpu_has_bf16_instructions
from lst_fast.caller_warning import warn_at_caller
from lst_fast.errors import EnvironmentFault, InputError
from lst_fast.walk.runtime import full_fp32_matmuls
from lst_fast.walk.settings import check_precision


@dataclasses.dataclass
class PreparedModel:
    """A model copy plus how to feed it: call it with fp32 (or fp64) images, get float logits.

    Built by `prepare` (or `PreparedModel.original` for the user's model itself), with keywords."""

    module: nn.Module
    input_dtype: Optional[torch.dtype]  # None: the images' own dtype
    channels_last: bool = False
    folded_batchnorms: int = 0
    is_copy: bool = False
    math_attention: bool = False
    compiled: bool = False

    @classmethod
    def original(cls, model: nn.Module, dtype: torch.dtype) -> "PreparedModel":
        """The user's model itself, fed images in its own floating dtype (`dtype` when it has none)."""
        return cls(model, input_dtype=floating_dtype(model, dtype))

    def __call__(self, images: Tensor) -> Tensor:
        if not self.compiled:
            return self._run(images)
        try:
            return self._run(images)
        except Exception as error:  # torch.compile reports failures at the first call, verbosely
            if type(error).__module__.startswith("torch._dynamo") or "inductor" in type(error).__module__:
                raise EnvironmentFault(
                    f"compile_model=True: torch.compile failed on this model "
                    f"({type(error).__name__}); run without compile_model"
                ) from error
            raise

    def eager(self) -> "PreparedModel":
        """The same copy without torch.compile (for one-off calls that should not trigger a compile)."""
        if not self.compiled:
            return self
        return dataclasses.replace(self, module=getattr(self.module, "_orig_mod", self.module), compiled=False)

    def _run(self, images: Tensor) -> Tensor:
        if self.channels_last and images.dim() == 4:  # dtype and layout in one pass
            images = images.to(dtype=self.input_dtype or images.dtype, memory_format=torch.channels_last)
        elif self.input_dtype is not None:
            images = images.to(self.input_dtype)
        if self.math_attention:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel([SDPBackend.MATH]):
                return self.module(images)
        return self.module(images)

    def describe(self) -> dict:
        return {
            "input_dtype": str(self.input_dtype).replace("torch.", "") if self.input_dtype else None,
            "channels_last": self.channels_last,
            "folded_batchnorms": self.folded_batchnorms,
            "copy": self.is_copy,
            "math_attention": self.math_attention,
            "compiled": self.compiled,
        }


def _state_tensors(model: nn.Module) -> List[Tensor]:
    return list(model.parameters()) + list(model.buffers())


def floating_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    for t in _state_tensors(model):
        if t.is_floating_point():
            return t.dtype
    return default


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def conv_batchnorm_pairs(model: nn.Module) -> List[Tuple[str, str]]:
    """(convolution, BatchNorm) submodule names of every eval-mode BatchNorm2d that directly follows a
    Conv2d whose output nothing else uses, each module called once: the pairs that can be folded.

    Works on a torch.fx trace, so it finds the pairs wherever the model's forward writes them; none when
    the model cannot be traced."""
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow and the like: no folding, still correct
        return []
    modules = dict(model.named_modules())
    uses: Dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            uses[node.target] = uses.get(node.target, 0) + 1
    pairs = []
    for node in traced.graph.nodes:
        if node.op != "call_module" or type(modules.get(node.target)) is not nn.BatchNorm2d:
            continue
        conv_node = node.args[0] if node.args else None
        if not isinstance(conv_node, torch.fx.Node) or conv_node.op != "call_module":
            continue
        conv, bn = modules.get(conv_node.target), modules[node.target]
        if (
            type(conv) is not nn.Conv2d
            or len(conv_node.users) != 1
            or uses[conv_node.target] != 1
            or uses[node.target] != 1
            or bn.running_mean is None
            or len(node.args) != 1
            or node.kwargs
        ):
            continue
        pairs.append((conv_node.target, node.target))
    return pairs


def fold_batchnorm(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """Fold every pair `conv_batchnorm_pairs` finds, in place: the convolution becomes the fused one and the
    BatchNorm an identity. Returns the modules replaced, by name (`restore_submodules` puts them back);
    two per folded pair.

    The model keeps its own classes and forward code (no fx GraphModule, whose generated forward is new
    code on every trace), so torch.compile finds the code it compiled for an earlier copy of the same
    model and does not compile again."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    replaced: List[Tuple[str, nn.Module]] = []
    for conv_name, bn_name in conv_batchnorm_pairs(model):
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
        replaced += [(conv_name, conv), (bn_name, bn)]
        _set_submodule(model, conv_name, fused)
        _set_submodule(model, bn_name, nn.Identity())
    return replaced


def restore_submodules(model: nn.Module, replaced: List[Tuple[str, nn.Module]]) -> None:
    for name, module in reversed(replaced):
        _set_submodule(model, name, module)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, module)


def _logits_agree(reference: Tensor, candidate: Tensor) -> bool:
    if candidate.shape != reference.shape or not bool(torch.isfinite(candidate).all()):
        return False
    scale = float(reference.abs().max().clamp_min(1.0))
    return float((candidate.float() - reference.float()).abs().max()) <= 1e-3 * scale


def _build_bf16(model: nn.Module, probe: Tensor, compile_model: bool) -> PreparedModel:
    try:
        work = copy.deepcopy(model)
    except Exception as error:
        raise InputError(
            f"precision='bf16' runs a converted copy of the model, but model could not be "
            f"copied (copy.deepcopy failed: {error}); use precision='fp32'"
        ) from error
    work.eval().requires_grad_(False)

    folded = 0
    if conv_batchnorm_pairs(work):
        with torch.no_grad(), full_fp32_matmuls():  # TF32 alone would differ by more than the folding does
            unfolded = work(probe)
            replaced = fold_batchnorm(work)
            if _logits_agree(unfolded, work(probe)):
                folded = len(replaced) // 2
            else:
                restore_submodules(work, replaced)
    channels_last = probe.dim() == 4 and has_conv2d(work)
    if probe.device.type == "cpu" and cpu_has_bf16_instructions() is False:
        warn_at_caller(BF16_EMULATED_WARNING, RuntimeWarning)
    work = work.to(torch.bfloat16)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)
    # On the CPU, the flash-attention kernel's bf16 backward is several times slower than the math path
    # (measured 2.3x on the whole shipped ViT); the math path gives the same attention.
    math_attention = probe.device.type == "cpu"
    if compile_model:
        work = torch.compile(work, dynamic=False)
    return PreparedModel(
        work,
        input_dtype=torch.bfloat16,
        channels_last=channels_last,
        folded_batchnorms=folded,
        is_copy=True,
        math_attention=math_attention,
        compiled=compile_model,
    )


def prepare(model: nn.Module, precision: str, probe: Tensor, compile_model: bool = False) -> PreparedModel:
    """What LST runs for `precision`: the model itself (fp32), or a bf16 working copy of it as it is now,
    built for this call (and checked on `probe`, a few of the images to traverse, already normalized).
    compile_model (bf16 only) wraps the copy in torch.compile."""
    check_precision(precision, compile_model)
    if precision == "fp32":
        return PreparedModel.original(model, probe.dtype)
    return _build_bf16(model, probe.to(floating_dtype(model, probe.dtype)), compile_model)
