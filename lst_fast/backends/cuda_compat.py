"""Whether the loaded CUDA module's kernels run on a given GPU, decided once per GPU on its first use.

Two things can stop a CUDA module that loaded fine: a driver older than the CUDA version the module was
built with (the driver refuses its kernels), and a GPU the module carries no code for (no machine code
for its architecture family, and no PTX old enough for the driver to compile for it). Either would fail
in the middle of a run; instead lst_fast sends that GPU's tensors to the pure-PyTorch operators and warns
once, naming the GPU, the driver, what is needed and the fix.

Architectures are written as in TORCH_CUDA_ARCH_LIST: "M.m" for code that runs on compute capability
M.m and on later minor versions of major M (machine code), or on M.m and anything newer (PTX); "M.ma" for
architecture-specific code (Hopper's wgmma, say), which runs on compute capability M.m alone, machine
code and PTX alike; "M.mf" for family-specific code, which runs on major M from minor m on (machine code
and PTX alike). A trailing "+PTX" is ignored here (the module's description lists its PTX apart).

The driver and device queries are the functions `driver_cuda_version`, `driver_release` and
`device_query`; the tests replace them to decide on a machine without a GPU.
"""

from __future__ import annotations

import ctypes
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from lst_fast.caller_warning import warn_at_caller
from lst_fast.errors import InputError

# The oldest driver release of each CUDA major version: with it, a module built with any CUDA X.y runs
# its machine code (CUDA's minor-version compatibility); compiling its PTX needs the driver of X.y itself.
MIN_DRIVER = {12: "525.60.13", 13: "580.65.06"}


@dataclass(frozen=True)
class CudaBuild:
    """What a CUDA module was built with: CUDA version "X.Y", machine-code and PTX architectures "M.m"."""

    cuda: str
    arches: tuple
    ptx: tuple

    @property
    def cuda_tuple(self) -> tuple:
        return _version_tuple(self.cuda)


def _version_tuple(text: str) -> tuple:
    major, minor = (text.split(".") + ["0"])[:2]
    return int(major), int(minor)


_ARCH = re.compile(r"(\d+)\.(\d+)([af]?)(\+PTX)?")


@dataclass(frozen=True)
class Arch:
    """One architecture entry: its compute capability and its suffix ("", "a" or "f"; the module's
    docstring says where each runs)."""

    capability: tuple
    suffix: str = ""

    @classmethod
    def parse(cls, text: str) -> "Arch":
        """ "9.0", "9.0a", "10.0f", "12.0+PTX" -> Arch; ValueError for anything else."""
        match = _ARCH.fullmatch(str(text).strip())
        if match is None:
            raise InputError(f"unreadable CUDA architecture {text!r} (expected e.g. 9.0, 9.0a, 10.0f or 12.0+PTX)")
        return cls((int(match[1]), int(match[2])), match[3])

    def machine_code_runs_on(self, capability: tuple) -> bool:
        """Machine code (a cubin) for this architecture runs on a GPU of `capability`."""
        cap = tuple(capability)
        if self.suffix == "a":
            return cap == self.capability
        return cap[0] == self.capability[0] and cap[1] >= self.capability[1]

    def ptx_compiles_for(self, capability: tuple) -> bool:
        """The driver can compile PTX of this architecture for a GPU of `capability`."""
        cap = tuple(capability)
        if self.suffix:  # "a": this capability only; "f": this family, from this minor version on
            return self.machine_code_runs_on(cap)
        return cap >= self.capability


def cuda_build(module: str | None) -> CudaBuild | None:
    """Reads lst_fast/<module>.json (written by setup.py beside the module); None when it is missing."""
    if module is None:
        return None
    path = Path(__file__).resolve().parents[1] / f"{module}.json"  # beside the compiled module, in lst_fast/
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return CudaBuild(cuda=str(data["cuda"]), arches=tuple(data["arches"]), ptx=tuple(data["ptx"]))


def driver_cuda_version() -> tuple | None:
    """The newest CUDA version the installed driver supports, e.g. (12, 4); None without a driver."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int(0)
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return version.value // 1000, (version.value % 1000) // 10


def driver_release() -> str | None:
    """The driver's release number, e.g. "535.104.05", read from the kernel module; None if unknown."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    for token in text.split():
        if token[:1].isdigit() and token.count(".") >= 1:
            return token
    return None


def device_query(index: int) -> tuple:
    """(name, (major, minor) compute capability) of CUDA device `index`."""
    return torch.cuda.get_device_name(index), torch.cuda.get_device_capability(index)


def unfit_reason(build: CudaBuild, driver: tuple | None, capability: tuple) -> str | None:
    """None when a module built as `build` runs on a GPU of `capability` under a driver for CUDA `driver`;
    else what does not fit (the start of the warning's sentence)."""
    major = build.cuda_tuple[0]
    if driver is None or driver < (major, 0):
        have = "no CUDA driver was found" if driver is None else f"the driver supports CUDA {driver[0]}.{driver[1]}"
        return (
            f"{have}, and the kernels were built with CUDA {build.cuda}, which needs a driver "
            f">= {MIN_DRIVER.get(major, f'for CUDA {major}')}"
        )
    cap = tuple(capability)
    if any(Arch.parse(a).machine_code_runs_on(cap) for a in build.arches):
        return None  # machine code of this GPU's major version, for its or an older minor version
    jit = [a for a in build.ptx if Arch.parse(a).ptx_compiles_for(cap)]
    if jit and driver >= build.cuda_tuple:
        return None  # the driver compiles the PTX for this GPU
    carried = ", ".join(f"sm_{a.replace('.', '')}" for a in build.arches)
    if jit:
        return (
            f"the kernels carry no machine code for compute capability {cap[0]}.{cap[1]} (only {carried}), "
            f"and compiling their PTX needs a driver for CUDA {build.cuda}; the driver supports CUDA "
            f"{driver[0]}.{driver[1]}"
        )
    ptx = ", ".join(build.ptx) or "none"
    return f"the kernels carry no code for compute capability {cap[0]}.{cap[1]} (only {carried}, PTX {ptx})"


def _fix(build: CudaBuild, driver: tuple | None, capability: tuple) -> str:
    major = build.cuda_tuple[0]
    if driver is None or driver < build.cuda_tuple:
        fix = f"install an NVIDIA driver >= {MIN_DRIVER.get(major, f'for CUDA {build.cuda}')}"
        if major > 12:
            fix += ", or install torch's CUDA 12 build (whose lst_fast module needs a driver >= 525)"
        return fix
    if major > 12 and tuple(capability) >= (7, 0):
        return "install torch's CUDA 12 build, whose lst_fast module carries code for sm_70 and newer"
    return "none within lst_fast's wheel: build it from source for this GPU (see the install page of the documentation)"


_checked: dict = {}  # device index -> None (the kernels run) or the reason they do not


def cuda_kernels_fit(device: torch.device, module: "str | None") -> bool:
    """True when the kernels of the loaded CUDA module (`module`, e.g. "_C_cuda13") run on `device`; checked
    (and warned about) once per GPU."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _checked:
        try:
            _checked[index] = _check(index, module)
        except ValueError as error:  # an unreadable description: decided (and warned about) once too
            _checked[index] = f"lst_fast.{module}'s description (lst_fast/{module}.json) is unreadable: {error}"
            warn_at_caller(
                f"lst_fast: {_checked[index]}; lst_fast uses its pure-PyTorch operators on cuda:{index}, "
                "which are slower. Fix: rebuild lst_fast (see the install page of the documentation).",
                UserWarning,
            )
    return _checked[index] is None


def cuda_checks() -> dict:
    """The GPUs checked so far: {"cuda:N": None or the reason the compiled kernels do not run there}."""
    return {f"cuda:{index}": reason for index, reason in sorted(_checked.items())}


def _check(index: int, module: "str | None") -> str | None:
    build = cuda_build(module)
    if build is None:
        return None  # a build without its description (an old in-place build): nothing to check against
    name, capability = device_query(index)
    driver = driver_cuda_version()
    reason = unfit_reason(build, driver, capability)
    if reason is not None:
        release = driver_release()
        driver_words = (
            "no driver"
            if driver is None
            else (f"driver {release or 'of unknown release'} (CUDA {driver[0]}.{driver[1]})")
        )
        warn_at_caller(
            f"lst_fast: the compiled CUDA kernels (lst_fast.{module}, CUDA {build.cuda}) cannot run on cuda:{index} "
            f"({name}, compute capability {capability[0]}.{capability[1]}, {driver_words}): {reason}. "
            f"lst_fast uses its pure-PyTorch operators on this GPU instead, which are slower. "
            f"Fix: {_fix(build, driver, capability)}.",
            UserWarning,
        )
    return reason
