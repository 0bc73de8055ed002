#!/usr/bin/env python3
"""Mutation check, run on demand (pytest does not collect it): plants known bugs one at a time in a copy
of the repository and shows that the test suite notices each of them.

    python3 tests/mutation/run_mutants.py              # every mutant
    python3 tests/mutation/run_mutants.py cpu_accept_le ref_accept_le   # some of them
    python3 tests/mutation/run_mutants.py --list

For each mutant: copy the repository to a temporary folder (once), apply the mutant's text patch (exact
snippets; "mutant could not be applied" when a snippet is not found exactly once, so a changed source
fails loudly and the patch can be updated), rebuild the extension there when a C++ file changed
(CPU only: LST_FAST_CUDA=0, MAX_JOBS=2; ninja recompiles the changed files only), run the mutant's test
files (stopping at the first failure), then restore the copy (sources and the unmutated extension).
A mutant is "killed" when the tests fail,
"survived" when they pass. Mutants of the pure-PyTorch reference and of the wrappers run their tests a
second time with the extension disabled (LST_FAST_DISABLE_EXTENSION=1), where the reference must be
caught without the kernels to compare with; they count as killed only when both runs fail.
Exit status: 0 when every mutant was killed, 1 when one survived, 2 when one could not be applied or
built.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[2]
IGNORE = shutil.ignore_patterns(
    ".git", "build", "__pycache__", ".hypothesis", ".pytest_cache", "*.egg-info", ".benchmarks", "eval_*", "runs"
)


@dataclass
class Mutant:
    name: str
    what: str
    path: str  # file relative to the repository root
    old: str  # exact snippet, found exactly once
    new: str
    tests: List[str]
    without_extension: bool = False  # also run the tests with LST_FAST_DISABLE_EXTENSION=1
    extra: List[Tuple[str, str]] = field(default_factory=list)  # further (old, new) in the same file

    @property
    def native(self) -> bool:
        return self.path.startswith("csrc/")


OPS_TESTS = ["tests/test_ops.py"]
MUTANTS = [
    # -- the four of issue #15 ---------------------------------------------------------------------------
    Mutant(
        "cpu_chunk_sum",
        "CPU kernel sums <g, v> and <g, g> over the first 16,384-element chunk only",
        "csrc/cpu/orthogonal_step_kernel.cpp",
        "for (int64_t c = 0; c < chunks; ++c) {",
        "for (int64_t c = 0; c < 1; ++c) {",
        OPS_TESTS,
    ),
    Mutant(
        "cpu_accept_le",
        "CPU kernel accepts with <= instead of <",
        "csrc/cpu/confidence_accept_kernel.cpp",
        "acc_ptr[i] = (p0_ptr[i] - p) < threshold;",
        "acc_ptr[i] = (p0_ptr[i] - p) <= threshold;",
        OPS_TESTS,
    ),
    Mutant(
        "ref_accept_le",
        "reference accepts with <= instead of <",
        "lst_fast/backends/reference.py",
        "accepted = (p0.to(torch.float64) - p) < threshold",
        "accepted = (p0.to(torch.float64) - p) <= threshold",
        OPS_TESTS,
        without_extension=True,
    ),
    Mutant(
        "geometry_repeat",
        "geometry expands labels with repeat instead of repeat_interleave",
        "lst_fast/geometry.py",
        "label[start : start + step].repeat_interleave(p)",
        "label[start : start + step].repeat(p)",
        ["tests/test_geometry_batching.py"],
    ),
    Mutant(
        "cpu_bf16_sign",
        "CPU kernel flips the sign of the projection for bfloat16 only",
        "csrc/cpu/orthogonal_step_kernel.cpp",
        "static_cast<double>(v) - c * static_cast<double>(g)",
        "static_cast<double>(v) - (std::is_same<scalar_t, at::BFloat16>::value ? -c : c) * static_cast<double>(g)",
        OPS_TESTS,
    ),
    # -- more, on the wrappers and the reference ---------------------------------------------------------------
    Mutant(
        "ref_bf16_sign",
        "reference flips the sign of the projection for bfloat16 only",
        "lst_fast/backends/reference.py",
        "v_perp = (v64 - _per_sample(coef, x.dim()) * g64).to(opmath)",
        "v_perp = (v64 - (-1 if x.dtype == torch.bfloat16 else 1) * _per_sample(coef, x.dim()) * g64).to(opmath)",
        OPS_TESTS,
    ),
    Mutant(
        "ops_no_step_checks",
        "orthogonal_step skips the argument checks",
        "lst_fast/ops.py",
        '_implementation("orthogonal_step", op_checks.check_orthogonal_step, reference.orthogonal_step)',
        '_implementation("orthogonal_step", lambda *args: None, reference.orthogonal_step)',
        OPS_TESTS,
        without_extension=True,
    ),
    Mutant(
        "ops_nan_threshold",
        "the checks let a NaN threshold through",
        "lst_fast/backends/op_checks.py",
        "    if math.isnan(threshold):",
        "    if False:",
        OPS_TESTS,
        without_extension=True,
    ),
    Mutant(
        "ops_no_overlap_check",
        "the checks miss memory shared by two tensors",
        "lst_fast/backends/op_checks.py",
        "    if a_begin < b_end and b_begin < a_end:",
        "    if False:",
        OPS_TESTS,
        without_extension=True,
    ),
    Mutant(
        "cpu_guard_no_sizes",
        "the CPU kernels' guard lets a tensor of another shape through",
        "csrc/kernel_guards.h",
        "return t.scalar_type() == ref.scalar_type() && same_sizes(t, ref) &&",
        "return t.scalar_type() == ref.scalar_type() &&",
        OPS_TESTS,
    ),
    Mutant(
        "ref_label_in_range",
        "reference evaluates an out-of-range label as a clamped one",
        "lst_fast/backends/reference.py",
        '.masked_fill(~in_range, float("nan"))',
        "",
        OPS_TESTS,
        without_extension=True,
    ),
    Mutant(
        "ref_adv_full_step",
        "reference adds the whole adversarial step instead of half",
        "lst_fast/backends/reference.py",
        "(adv_step_size / 2) * g",
        "adv_step_size * g",
        OPS_TESTS,
        without_extension=True,
    ),
    Mutant(
        "ref_zero_grad",
        "reference divides by <g, g> even when the gradient is zero",
        "lst_fast/backends/reference.py",
        "coef = torch.where(gg > 0, gv / gg.where(gg > 0, 1.0), 0.0)",
        "coef = gv / gg",
        OPS_TESTS,
        without_extension=True,
    ),
    Mutant(
        "ref_simplex_first_vertex",
        "reference simplex points reuse the first vertex for every weight",
        "lst_fast/backends/reference.py",
        "acc = acc + w[None, :, j, None] * v[:, :, j]",
        "acc = acc + w[None, :, j, None] * v[:, :, 0]",
        OPS_TESTS,
        without_extension=True,
    ),
    # -- the shared pool (issue 25) ---------------------------------------------------------------------
    Mutant(
        "pool_keeps_every_image",
        "the pool keeps every image it scans, correctly classified or not",
        "lst_fast/evaluation/pool.py",
        "            alive[rows[~ok.cpu()]] = False\n",
        "",
        ["tests/test_pool.py"],
    ),
    Mutant(
        "pool_ignores_min_confidence",
        "the pool keeps correctly classified images below --min-confidence",
        "lst_fast/evaluation/pool.py",
        "        ok &= confidence > min_confidence",
        "        ok &= confidence > -1.0",
        ["tests/test_pool.py"],
    ),
]


class NotApplied(RuntimeError):
    pass


def patch(text: str, old: str, new: str, mutant: str) -> str:
    count = text.count(old)
    if count != 1:
        raise NotApplied(f"mutant could not be applied: {mutant}: snippet found {count} times (expected once): {old!r}")
    return text.replace(old, new)


def build(copy: Path, log: Path) -> None:
    env = {**os.environ, "LST_FAST_CUDA": "0", "MAX_JOBS": os.environ.get("MAX_JOBS", "2")}
    with open(log, "a") as out:
        result = subprocess.run(
            [sys.executable, "setup.py", "build_ext", "--inplace"],
            cwd=copy,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise NotApplied(f"the extension did not build (see {log})")


def run_tests(copy: Path, tests: List[str], env_extra: Dict[str, str], log: Path) -> bool:
    """True when the tests pass (the mutant survived)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--hypothesis-seed=0", *tests]
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(env_extra and [f'{k}={v}' for k, v in env_extra.items()] or [])} {' '.join(cmd)}\n")
        out.flush()
        result = subprocess.run(cmd, cwd=copy, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode not in (0, 1):
        with open(log) as f:
            tail = f.read()[-2000:]
        raise NotApplied(f"pytest exited with {result.returncode} (not a test failure):\n{tail}")
    return result.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy and logs")
    args = parser.parse_args()
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:26s} {m.what}")
        return 0
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants {sorted(unknown)}; --list shows them")

    work = Path(tempfile.mkdtemp(prefix="lst_mutants_"))
    copy = work / "repo"
    shutil.copytree(ROOT, copy, ignore=IGNORE)
    extension = copy / "lst_fast" / "_C.abi3.so"
    if not extension.exists():
        build(copy, work / "build.log")
    shutil.copy2(extension, work / "_C.original.so")
    results = []
    status = 0
    for m in chosen:
        log = work / f"{m.name}.log"
        target = copy / m.path
        original = target.read_text()
        start = time.time()
        try:
            text = patch(original, m.old, m.new, m.name)
            for old, new in m.extra:
                text = patch(text, old, new, m.name)
            target.write_text(text)
            if m.native:
                build(copy, log)
            survived = run_tests(copy, m.tests, {}, log)
            if not survived and m.without_extension:
                survived = run_tests(copy, m.tests, {"LST_FAST_DISABLE_EXTENSION": "1"}, log)
            outcome = "SURVIVED" if survived else "killed"
            status = max(status, 1 if survived else 0)
        except NotApplied as error:
            outcome = f"ERROR: {error}"
            status = 2
        finally:
            target.write_text(original)  # newer than its object file: the next build recompiles it
            if m.native:  # back to the unmutated kernels for the mutants that follow
                shutil.copy2(work / "_C.original.so", extension)
        results.append((m, outcome, time.time() - start))
        print(f"{m.name:26s} {outcome:10s} {time.time() - start:6.0f}s  {m.what}", flush=True)

    print(
        f"\n{sum(o == 'killed' for _, o, _ in results)} of {len(results)} mutants killed"
        + ("" if status == 0 else "; see the logs in " + str(work))
    )
    if status == 0 and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
