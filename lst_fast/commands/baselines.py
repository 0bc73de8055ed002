"""The loops lst_fast is measured against, written plainly as a user would (docs/ALGORITHM.md section 1):
`lst-fast bench` and the repository's bench/ both time them.

paper_loop:     the paper's code: fp32, two model evaluations per iteration (forward+backward at x,
                forward at the candidate), the step as separate torch ops.
one_pass_loop:  the same with one forward+backward per iteration (the candidate's serves both).
expert_loop:    one pass, bf16 autocast, the forward+loss compiled with torch.compile: what an expert
                writes by hand.
All take a model that returns logits for images in [0, 1] and run `iterations` steps on (x, target).
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

ETA, DELTA, EPS = 1e-2, 0.2, 2e-3  # the paper's settings: step, threshold, adversarial step


def _projected_step(x: Tensor, target: Tensor, g: Tensor, adv: Tensor) -> Tuple[Tensor, Tensor]:
    v = target - x
    gv = (g * v).flatten(1).sum(1)
    gg = (g * g).flatten(1).sum(1)
    coef = torch.where(gg > 0, gv / gg.clamp_min(1e-30), torch.zeros_like(gg)).view(-1, 1, 1, 1)
    v_perp = v - coef * g
    adv = (adv + (EPS / 2) * g).clamp(-EPS, EPS)
    return (x + ETA * v_perp - adv).clamp(0, 1), adv


def _confidence(logits: Tensor, label: Tensor) -> Tensor:
    return torch.softmax(logits.float(), 1).gather(1, label[:, None]).squeeze(1)


def paper_loop(model: torch.nn.Module, x: Tensor, target: Tensor, iterations: int) -> Tensor:
    with torch.no_grad():
        logits = model(x)
    label = logits.argmax(1)
    p0 = _confidence(logits, label)
    adv = torch.zeros_like(x)
    for _ in range(iterations):
        xg = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xg), label, reduction="sum")
        (g,) = torch.autograd.grad(loss, xg)
        candidate, adv = _projected_step(x, target, g, adv)
        with torch.no_grad():
            p = _confidence(model(candidate), label)
        x = torch.where(((p0 - p) < DELTA).view(-1, 1, 1, 1), candidate, x)
    return x


def _one_pass(forward_loss: Callable[[Tensor, Tensor], Tuple[Tensor, Tensor]], model, x, target, iterations):
    with torch.no_grad():
        logits = model(x)
    label = logits.argmax(1)
    p0 = _confidence(logits, label)
    adv = torch.zeros_like(x)

    def grad_at(images: Tensor) -> Tuple[Tensor, Tensor]:
        images = images.detach().requires_grad_(True)
        loss, logits = forward_loss(images, label)
        (g,) = torch.autograd.grad(loss, images)
        return g, logits.detach()

    g, _ = grad_at(x)
    for _ in range(iterations):
        candidate, adv = _projected_step(x, target, g, adv)
        cand_g, cand_logits = grad_at(candidate)
        accept = ((p0 - _confidence(cand_logits, label)) < DELTA).view(-1, 1, 1, 1)
        x = torch.where(accept, candidate, x)
        g = torch.where(accept, cand_g, g)
    return x


def one_pass_loop(model: torch.nn.Module, x: Tensor, target: Tensor, iterations: int) -> Tensor:
    def forward_loss(images, label):
        logits = model(images)
        return F.cross_entropy(logits, label, reduction="sum"), logits

    return _one_pass(forward_loss, model, x, target, iterations)


def make_expert_loop(model: torch.nn.Module, device_type: str) -> Callable[..., Tensor]:
    """One pass, bf16 autocast, forward+loss compiled once (compilation happens on the first call)."""

    def forward_loss(images, label):
        with torch.autocast(device_type, dtype=torch.bfloat16):
            logits = model(images)
        return F.cross_entropy(logits.float(), label, reduction="sum"), logits

    # Static shapes, as lst_fast's compile_model: without dynamic=False, Dynamo would recompile with
    # dynamic shapes once it saw a second model through this same code, slowing the baseline.
    compiled = torch.compile(forward_loss, dynamic=False)

    def expert_loop(model_, x, target, iterations):
        return _one_pass(compiled, model_, x, target, iterations)

    return expert_loop
