"""Build script for lst_fast and its native operators: lst_fast._C (CPU kernels) and lst_fast._C_cuda<N>
(CUDA kernels built with CUDA major version N; lst_fast loads the one that matches torch.version.cuda).
All use the LibTorch stable ABI only, compiled for torch 2.10 (TORCH_TARGET_VERSION), so one build loads
on every torch from 2.10 on. Beside each CUDA module goes lst_fast/_C_cuda<N>.json: its CUDA version and
architectures, which lst_fast checks against the driver and the GPU before it uses the kernels.

Every module links libstdc++ statically, binds the few glibc symbols newer than 2.28 to their 2.28
versions (csrc/compat/glibc_compat.cpp) and exports PyInit_* only (csrc/compat/exports.map), so the
wheel is manylinux_2_28 (torch's own tag) even when it is built on a newer Linux.

Environment switches (the resolved configuration is printed at build time):
  LST_FAST_BUILD_EXTENSION=1|0  0: install the pure-Python package only (the pure-PyTorch fallback runs).
  LST_FAST_CUDA=auto|1|0   build the CUDA kernels: auto (default) when torch is a CUDA build of nvcc's
                           major version and nvcc is found (no GPU needed); 1 to require them (with 1,
                           an nvcc of another major version than torch's builds its own module, e.g.
                           _C_cuda12 beside a CUDA 13 torch: the stable-ABI headers are CUDA-agnostic);
                           0 to skip them.
  TORCH_CUDA_ARCH_LIST     GPU architectures; default for CUDA 12: 7.0 7.5 8.0 8.6 8.9 9.0+PTX, for
                           CUDA 13: 7.5 8.0 8.6 8.9 9.0 10.0 11.0 12.0+PTX (plus the visible GPUs' own).
                           Entries are numbers, with an "a" (9.0a: that architecture only) or "f"
                           (10.0f: its family) suffix and "+PTX" as torch takes them; names such as
                           "Hopper" are refused (the module's description must list numbers).
  LST_FAST_DEBUG=1         keep debug info (-g, -lineinfo) and symbols; release builds are stripped.
  MAX_JOBS                 parallel compile jobs (ninja); default from cores and free memory.
  LST_FAST_NVCC_FLAGS      extra nvcc flags, LST_FAST_CXX_FLAGS extra host-compiler flags.
  CUDA_HOME                CUDA toolkit; /usr/local/cuda when unset and present.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
os.chdir(ROOT)  # the relative source paths below are relative to the project
CSRC = ROOT / "csrc"
MIN_TORCH = "2.10"
# The torch whose stable ABI the binaries target: 2.10.0 as TORCH_ABI_VERSION encodes it (major, minor,
# patch, ABI tag in bytes 7, 6, 5, 0). The headers then refuse any API newer than 2.10.
TORCH_TARGET_VERSION = "0x020a000000000000"
# glibc functions whose default version on a newer glibc is above 2.28: the LST_FAST_OLD lines of
# csrc/compat/glibc_compat.cpp, plus the ones it wraps by hand.
GLIBC_WRAPPED = tuple(
    re.findall(r"^LST_FAST_OLD\((\w+),", (CSRC / "compat" / "glibc_compat.cpp").read_text(), re.M)
) + ("fstat64", "fstat", "arc4random")

# torch.utils.cpp_extension reads CUDA_HOME when imported; its own guess is wrong on some machines.
if not os.environ.get("CUDA_HOME") and Path("/usr/local/cuda/bin/nvcc").exists():
    os.environ["CUDA_HOME"] = "/usr/local/cuda"


def read_version() -> str:
    namespace: dict = {}
    exec((ROOT / "lst_fast" / "version.py").read_text(), namespace)
    return namespace["__version__"]


def env_flag(name: str, default: str, allowed=("auto", "1", "0")) -> str:
    value = os.environ.get(name, default).strip().lower()
    if value not in allowed:
        sys.exit(f"setup.py: {name} must be {', '.join(allowed)}, got {value!r}")
    return value


def default_max_jobs() -> int:
    # Each nvcc/g++ job on these sources needs about 1.5 GiB; never more jobs than cores.
    try:
        free_gib = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError):
        free_gib = 4.0
    return max(1, min(os.cpu_count() or 1, int(free_gib / 1.5)))


def nvcc_version(cuda_home: str):
    from packaging.version import Version

    nvcc = Path(cuda_home) / "bin" / "nvcc"
    if not nvcc.exists():
        return None
    out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True, check=False).stdout
    for token in out.replace(",", " ").split():
        if token.startswith("V") and token[1:2].isdigit():
            return Version(token[1:])
    return None


# Architectures per CUDA major version. A cubin runs on its own major version from its minor on (sm_86
# code runs on 8.7 and 8.9), and PTX is compiled by the driver for the same or a newer architecture: the
# newest entry carries PTX for GPUs newer than the toolkit. CUDA 12 is the one for Volta (sm_70), which
# CUDA 13 dropped; CUDA 13 is the one for Blackwell and Thor (sm_100, sm_110, sm_120).
DEFAULT_ARCHES = {
    12: ["7.0", "7.5", "8.0", "8.6", "8.9", "9.0"],
    13: ["7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "11.0", "12.0"],
}


def default_arch_list(nvcc_path: Path, major: int) -> list:
    """DEFAULT_ARCHES of this CUDA major version, restricted to what nvcc knows."""
    out = subprocess.run([str(nvcc_path), "--list-gpu-arch"], capture_output=True, text=True, check=False).stdout
    known = {
        f"{int(tok.split('_')[1]) // 10}.{int(tok.split('_')[1]) % 10}"
        for tok in out.split()
        if tok.startswith("compute_") and tok.split("_")[1].isdigit()
    }
    arches = [a for a in DEFAULT_ARCHES.get(major, DEFAULT_ARCHES[13]) if not known or a in known]
    return arches or ["9.0"]


ARCH_ENTRY = re.compile(r"(\d+\.\d+[af]?)(\+PTX)?")  # 9.0, 9.0a (arch-specific), 10.0f (family), 12.0+PTX


def parse_arch_list(text: str) -> tuple:
    """TORCH_CUDA_ARCH_LIST ("8.0;9.0a;12.0+PTX", separators ; or space) -> (cubin architectures, PTX
    ones), as lst_fast/_C_cuda<N>.json lists them (lst_fast.backends.cuda_compat reads the a/f suffixes). Anything
    else (torch's names such as "Hopper", or "native") stops the build with a message, since the module's
    description must say exactly which GPUs its code runs on."""
    arches, ptx = [], []
    for entry in text.replace(";", " ").split():
        match = ARCH_ENTRY.fullmatch(entry)
        if match is None:
            sys.exit(
                f"setup.py: TORCH_CUDA_ARCH_LIST entry {entry!r} is not a compute capability; write numbers "
                "such as 9.0, 9.0a, 10.0f or 12.0+PTX (separated by ; or spaces)"
            )
        arches.append(match[1])
        if match[2]:
            ptx.append(match[1])
    return arches, ptx


def extension_modules():
    """(the extensions to build, setup's cmdclass), as the environment switches and the machine decide."""
    if env_flag("LST_FAST_BUILD_EXTENSION", "1", allowed=("1", "0")) == "0":
        print("lst_fast build: LST_FAST_BUILD_EXTENSION=0, pure-Python package only")
        return [], {}

    import torch
    from packaging.version import Version
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension

    if Version(torch.__version__.split("+")[0]) < Version(MIN_TORCH):
        sys.exit(f"setup.py: lst_fast needs torch >= {MIN_TORCH}, found {torch.__version__}")
    want_cuda = env_flag("LST_FAST_CUDA", "auto")
    nvcc = nvcc_version(CUDA_HOME) if CUDA_HOME else None
    build_cuda = cuda_to_build(want_cuda, torch.version.cuda, nvcc, CUDA_HOME)
    cuda_module = f"lst_fast._C_cuda{nvcc.major}" if build_cuda else None
    if build_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = default_arch_setting(Path(CUDA_HOME) / "bin" / "nvcc", nvcc.major)
    os.environ.setdefault("MAX_JOBS", str(default_max_jobs()))
    debug = env_flag("LST_FAST_DEBUG", "0", allowed=("1", "0")) == "1"
    extensions = make_extensions(cuda_module, CUDA_HOME, *compiler_flags(debug))
    print_configuration(torch, CUDA_HOME, nvcc, want_cuda, extensions, debug)
    description = None
    if build_cuda:
        arches, ptx = parse_arch_list(os.environ["TORCH_CUDA_ARCH_LIST"])
        description = {"cuda": f"{nvcc.major}.{nvcc.minor}", "arches": arches, "ptx": ptx}
    other_major = build_cuda and nvcc.major != Version(torch.version.cuda).major
    return extensions, {"build_ext": build_ext_class(BuildExtension, cuda_module, description, other_major)}


def cuda_to_build(want_cuda: str, torch_cuda, nvcc, cuda_home) -> bool:
    """Whether the CUDA kernels are built, from LST_FAST_CUDA, torch's CUDA version and nvcc's."""
    from packaging.version import Version

    possible = torch_cuda is not None and nvcc is not None
    if want_cuda == "1" and not possible:
        sys.exit(
            "setup.py: LST_FAST_CUDA=1 but the CUDA kernels cannot be built "
            f"(torch CUDA: {torch_cuda}, nvcc: {nvcc}, CUDA_HOME: {cuda_home})"
        )
    if not possible or want_cuda == "0":
        return False
    if nvcc.major != Version(torch_cuda).major and want_cuda != "1":
        print(
            f"lst_fast build: nvcc {nvcc} and torch's CUDA {torch_cuda} differ in major version; "
            f"skipping the CUDA kernels (LST_FAST_CUDA=1 builds lst_fast._C_cuda{nvcc.major} anyway)"
        )
        return False
    return True


def default_arch_setting(nvcc_path: Path, major: int) -> str:
    """TORCH_CUDA_ARCH_LIST when unset: default_arch_list plus the visible GPUs' own, PTX for the newest
    default one."""
    import torch
    from packaging.version import Version

    arches = default_arch_list(nvcc_path, major)
    newest = arches[-1]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            major_, minor = torch.cuda.get_device_capability(i)
            if f"{major_}.{minor}" not in arches:
                arches.append(f"{major_}.{minor}")
    return ";".join(a + "+PTX" if a == newest else a for a in sorted(arches, key=Version))


def compiler_flags(debug: bool):
    """(host compiler flags, nvcc flags, linker flags)."""
    stable_abi = [f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}"]
    # -ffp-contract=off / --fmad=false: every product and sum is rounded on its own, as in the
    # pure-PyTorch reference, so the kernels can match it bit for bit. -g0 overrides the -g of Python's
    # own CFLAGS; hidden visibility exports PyInit_* alone. Torch adds -DPy_LIMITED_API (py_limited_api).
    cxx_flags = ["-O3", "-ffp-contract=off", "-fvisibility=hidden", *stable_abi, "-g" if debug else "-g0"]
    cxx_flags += os.environ.get("LST_FAST_CXX_FLAGS", "").split()
    nvcc_flags = ["-O3", "--fmad=false", "-std=c++17", *stable_abi] + (["-g", "-lineinfo"] if debug else [])
    nvcc_flags += os.environ.get("LST_FAST_NVCC_FLAGS", "").split()
    link_flags = [] if debug else ["-Wl,--strip-all"]
    # manylinux_2_28 (see the docstring): static libstdc++ (libgcc stays shared: a static one needs glibc
    # 2.35's _dl_find_object), glibc symbols newer than 2.28 redirected to csrc/compat/glibc_compat.cpp,
    # and PyInit_* the only export.
    link_flags += ["-static-libstdc++", f"-Wl,--version-script={CSRC / 'compat' / 'exports.map'}"]
    link_flags += [f"-Wl,--wrap={name}" for name in GLIBC_WRAPPED]
    return cxx_flags, nvcc_flags, link_flags


def relative_sources(paths) -> list:
    """Sources relative to the project (setuptools refuses absolute ones); include paths stay absolute (ninja)."""
    return sorted(str(p.relative_to(ROOT)) for p in paths)


def make_extensions(cuda_module, cuda_home, cxx_flags, nvcc_flags, link_flags) -> list:
    """lst_fast._C, and the CUDA module when `cuda_module` names one."""
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    compat_sources = relative_sources([CSRC / "compat" / "glibc_compat.cpp"])
    cpu_sources = relative_sources([CSRC / "lst_fast.cpp", *(CSRC / "cpu").glob("*.cpp")])
    # The stable ABI lives in libtorch_cpu (and, for the current CUDA stream, libtorch_cuda): link those
    # only, not c10/c10_cuda/libtorch's C++ symbols, which change with every torch release.
    cpu = CppExtension(
        "lst_fast._C",
        cpu_sources + compat_sources,
        include_dirs=[str(CSRC)],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
        py_limited_api=True,
    )
    cpu.libraries = ["torch_cpu"]
    if cuda_module is None:
        return [cpu]
    # The CUDA runtime statically where the toolkit has it (so the module does not depend on which
    # libcudart torch ships, and needs a driver of this toolkit's CUDA major version); else the shared
    # libcudart.so.<major> that torch's CUDA build of the same major version has already loaded
    # (auditwheel excludes it).
    static_runtime = any((Path(cuda_home) / lib / "libcudart_static.a").exists() for lib in ("lib64", "lib"))
    cuda = CUDAExtension(
        cuda_module,
        relative_sources([CSRC / "cuda" / "cuda_ops.cpp", *(CSRC / "cuda").glob("*.cu")]) + compat_sources,
        include_dirs=[str(CSRC)],
        # USE_CUDA declares the shim's CUDA calls (the current stream).
        extra_compile_args={"cxx": cxx_flags + ["-DUSE_CUDA"], "nvcc": nvcc_flags},
        extra_link_args=link_flags + ["-Wl,--as-needed"],
        py_limited_api=True,
    )
    cuda.libraries = ["torch_cpu", "torch_cuda", "cudart_static" if static_runtime else "cudart", "rt", "pthread", "dl"]
    return [cpu, cuda]


def print_configuration(torch, cuda_home, nvcc, want_cuda, extensions, debug: bool) -> None:
    build_cuda = len(extensions) > 1
    sources = [s for e in extensions for s in e.sources if "compat" not in s]
    print(
        "lst_fast build configuration:\n"
        f"  torch {torch.__version__} (CUDA {torch.version.cuda}), CUDA_HOME={cuda_home}, nvcc {nvcc}\n"
        f"  CUDA kernels: {'yes' if build_cuda else 'no'} (LST_FAST_CUDA={want_cuda})"
        + (f", TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}" if build_cuda else "")
        + (f", CUDA runtime: {extensions[1].libraries[2]}" if build_cuda else "")
        + f"\n  MAX_JOBS={os.environ['MAX_JOBS']}, ninja: {'yes' if shutil.which('ninja') else 'no'}\n"
        f"  modules: {', '.join(e.name for e in extensions)}; "
        f"{'debug build' if debug else 'release build (stripped)'}, TORCH_TARGET_VERSION={TORCH_TARGET_VERSION}\n"
        f"  sources: {', '.join(sources)}"
    )


def build_ext_class(base, cuda_module, description, other_cuda_major: bool):
    """build_ext that also writes lst_fast/<CUDA module>.json beside the module (what lst_fast checks), and
    that builds with an nvcc of another CUDA major version than torch's when asked to (LST_FAST_CUDA=1)."""
    import torch.utils.cpp_extension as cpp_extension

    def write(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / (cuda_module.split(".")[-1] + ".json")).write_text(json.dumps(description) + "\n")

    class BuildExt(base):
        def build_extensions(self):
            if not other_cuda_major:
                return super().build_extensions()
            # torch refuses an nvcc of another major version than its own CUDA, because its C++ CUDA API
            # would differ. Our modules use the stable ABI, which passes only C types, and no torch CUDA
            # header reaches nvcc, so that refusal does not apply: its check (a module function that
            # BuildExtension.build_extensions calls) is switched off for this build only, then restored.
            check = cpp_extension._check_cuda_version
            cpp_extension._check_cuda_version = lambda *args: None
            try:
                return super().build_extensions()
            finally:
                cpp_extension._check_cuda_version = check

        def build_extension(self, ext):
            super().build_extension(ext)
            if description is not None and ext.name == cuda_module:
                write(Path(self.get_ext_fullpath(ext.name)).parent)

        def copy_extensions_to_source(self):
            # --inplace: setuptools builds into build/ and copies the modules alone into the tree; the
            # description must sit beside the module there too, or the first-use check has nothing to read.
            super().copy_extensions_to_source()
            if description is not None:
                write(ROOT / "lst_fast")

    return BuildExt


ext_modules, cmdclass = extension_modules()

setup(
    version=read_version(),
    packages=find_packages(include=["lst_fast", "lst_fast.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    # Torch compiles with Py_LIMITED_API=0x030A0000: the binaries serve CPython 3.10 and newer.
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if ext_modules else {},
)
