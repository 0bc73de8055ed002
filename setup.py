"""Build script for lst_fast and its native operators: lst_fast._C (CPU kernels) and lst_fast._C_cuda
(CUDA kernels, loaded only when torch has CUDA). Both use the LibTorch stable ABI only, compiled for
torch 2.10 (TORCH_TARGET_VERSION), so one build loads on every torch from 2.10 on.

Environment switches (the resolved configuration is printed at build time):
  LST_FAST_BUILD_EXTENSION=1|0  0: install the pure-Python package only (the pure-PyTorch fallback runs).
  LST_FAST_CUDA=auto|1|0   build the CUDA kernels: auto (default) when torch is a CUDA build and nvcc is
                           found (no GPU needed); 1 to require them; 0 to skip them.
  TORCH_CUDA_ARCH_LIST     GPU architectures; default sm_80, sm_90, sm_100 and the newest architecture
                           family nvcc knows, with PTX (plus the visible GPUs' own, if any).
  LST_FAST_DEBUG=1         keep debug info (-g, -lineinfo) and symbols; release builds are stripped.
  MAX_JOBS                 parallel compile jobs (ninja); default from cores and free memory.
  LST_FAST_NVCC_FLAGS      extra nvcc flags, LST_FAST_CXX_FLAGS extra host-compiler flags.
  CUDA_HOME                CUDA toolkit; /usr/local/cuda when unset and present.
"""
import os
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


def default_arch_list(nvcc_path: Path) -> list:
    """sm_80, sm_90, sm_100 and the newest architecture family nvcc knows (e.g. 12.0), that one with PTX.

    A cubin runs on its own major version only (sm_120 code runs on 12.x), and PTX is JIT-compiled for
    the same or a newer architecture: so sm_100 is listed for B200/B300, and the newest family's PTX
    serves GPUs newer than this toolkit.
    """
    out = subprocess.run([str(nvcc_path), "--list-gpu-arch"], capture_output=True, text=True, check=False).stdout
    majors = [int(tok.split("_")[1]) // 10 for tok in out.split() if tok.startswith("compute_")]
    newest = f"{max(majors)}.0" if majors else "9.0"
    arches = ["8.0", "9.0", "10.0", newest]
    return sorted(set(arches), key=lambda a: tuple(map(int, a.split("."))))


def extension_modules():
    if "LST_FAST_NO_EXTENSION" in os.environ:  # the old name; too easy to confuse with the run-time switch
        sys.exit("setup.py: LST_FAST_NO_EXTENSION was renamed; use LST_FAST_BUILD_EXTENSION=0")
    if env_flag("LST_FAST_BUILD_EXTENSION", "1", allowed=("1", "0")) == "0":
        print("lst_fast build: LST_FAST_BUILD_EXTENSION=0, pure-Python package only")
        return [], {}

    import torch
    from packaging.version import Version
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    torch_version = Version(torch.__version__.split("+")[0])
    if torch_version < Version(MIN_TORCH):
        sys.exit(f"setup.py: lst_fast needs torch >= {MIN_TORCH}, found {torch.__version__}")

    want_cuda = env_flag("LST_FAST_CUDA", "auto")
    nvcc = nvcc_version(CUDA_HOME) if CUDA_HOME else None
    cuda_possible = torch.version.cuda is not None and nvcc is not None
    if want_cuda == "1" and not cuda_possible:
        sys.exit(
            "setup.py: LST_FAST_CUDA=1 but the CUDA kernels cannot be built "
            f"(torch CUDA: {torch.version.cuda}, nvcc: {nvcc}, CUDA_HOME: {CUDA_HOME})"
        )
    build_cuda = cuda_possible and want_cuda != "0"
    if build_cuda and nvcc.major != Version(torch.version.cuda).major:
        message = f"nvcc {nvcc} and torch's CUDA {torch.version.cuda} differ in major version"
        if want_cuda == "1":
            sys.exit(f"setup.py: {message}")
        print(f"lst_fast build: {message}; skipping the CUDA kernels (LST_FAST_CUDA=1 to insist)")
        build_cuda = False

    if build_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        arches = default_arch_list(Path(CUDA_HOME) / "bin" / "nvcc")
        newest = arches[-1]
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                major, minor = torch.cuda.get_device_capability(i)
                if f"{major}.{minor}" not in arches:
                    arches.append(f"{major}.{minor}")
        arches = sorted(arches, key=Version)
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(a + "+PTX" if a == newest else a for a in arches)
    os.environ.setdefault("MAX_JOBS", str(default_max_jobs()))

    debug = env_flag("LST_FAST_DEBUG", "0", allowed=("1", "0")) == "1"
    stable_abi = [f"-DTORCH_TARGET_VERSION={TORCH_TARGET_VERSION}"]
    # -ffp-contract=off / --fmad=false: every product and sum is rounded on its own, as in the
    # pure-PyTorch reference, so the kernels can match it bit for bit. -g0 overrides the -g of Python's
    # own CFLAGS; hidden visibility exports PyInit_* alone. Torch adds -DPy_LIMITED_API (py_limited_api).
    cxx_flags = ["-O3", "-ffp-contract=off", "-fvisibility=hidden", *stable_abi, "-g" if debug else "-g0"]
    cxx_flags += os.environ.get("LST_FAST_CXX_FLAGS", "").split()
    nvcc_flags = ["-O3", "--fmad=false", "-std=c++17", *stable_abi] + (["-g", "-lineinfo"] if debug else [])
    nvcc_flags += os.environ.get("LST_FAST_NVCC_FLAGS", "").split()
    link_flags = [] if debug else ["-Wl,--strip-all"]

    # Sources relative to the project (setuptools refuses absolute ones); include paths absolute (ninja).
    def rel(paths):
        return sorted(str(p.relative_to(ROOT)) for p in paths)

    cpu_sources = rel([CSRC / "lst_fast.cpp", *(CSRC / "cpu").glob("*.cpp")])
    extensions = [
        CppExtension(
            "lst_fast._C",
            cpu_sources,
            include_dirs=[str(CSRC)],
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
            py_limited_api=True,
        )
    ]
    sources = list(cpu_sources)
    if build_cuda:
        cuda_sources = rel([CSRC / "cuda" / "cuda_ops.cpp", *(CSRC / "cuda").glob("*.cu")])
        extensions.append(
            CUDAExtension(
                "lst_fast._C_cuda",
                cuda_sources,
                include_dirs=[str(CSRC)],
                # USE_CUDA declares the shim's CUDA calls (the current stream).
                extra_compile_args={"cxx": cxx_flags + ["-DUSE_CUDA"], "nvcc": nvcc_flags},
                # The CUDA runtime linked statically: the module then loads beside any torch CUDA build
                # (12.x or 13.x); the kernels need a driver for this toolkit's CUDA version.
                extra_link_args=link_flags + ["-Wl,--as-needed"],
                py_limited_api=True,
            )
        )
        sources += cuda_sources
    # The stable ABI lives in libtorch_cpu (and, for the current CUDA stream, libtorch_cuda): link those
    # only, not c10/c10_cuda/libtorch's C++ symbols, which change with every torch release.
    extensions[0].libraries = ["torch_cpu"]
    if build_cuda:
        extensions[1].libraries = ["torch_cpu", "torch_cuda", "cudart_static", "rt", "pthread", "dl"]

    print(
        "lst_fast build configuration:\n"
        f"  torch {torch.__version__} (CUDA {torch.version.cuda}), CUDA_HOME={CUDA_HOME}, nvcc {nvcc}\n"
        f"  CUDA kernels: {'yes' if build_cuda else 'no'} (LST_FAST_CUDA={want_cuda})"
        + (f", TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}" if build_cuda else "")
        + f"\n  MAX_JOBS={os.environ['MAX_JOBS']}, ninja: {'yes' if shutil.which('ninja') else 'no'}\n"
        f"  modules: {', '.join(e.name for e in extensions)}; "
        f"{'debug build' if debug else 'release build (stripped)'}, TORCH_TARGET_VERSION={TORCH_TARGET_VERSION}\n"
        f"  sources: {', '.join(sources)}"
    )
    return extensions, {"build_ext": BuildExtension}


ext_modules, cmdclass = extension_modules()

setup(
    version=read_version(),
    packages=find_packages(include=["lst_fast", "lst_fast.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    # Torch compiles with Py_LIMITED_API=0x030A0000: the binaries serve CPython 3.10 and newer.
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if ext_modules else {},
)
