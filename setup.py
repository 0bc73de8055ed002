"""Build script for lst_fast and its native operators (lst_fast._C).

Environment switches (the resolved configuration is printed at build time):
  LST_FAST_CUDA=auto|1|0   build the CUDA kernels: auto (default) when torch is a CUDA build and nvcc is
                           found (no GPU needed); 1 to require them; 0 to skip them.
  LST_FAST_NO_EXTENSION=1  install the pure-Python package only (the pure-PyTorch fallback is used).
  TORCH_CUDA_ARCH_LIST     GPU architectures; default "8.0;9.0" (plus the visible GPUs' own, if any).
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
MIN_TORCH = "2.4"

# torch.utils.cpp_extension reads CUDA_HOME when imported; its own guess is wrong on some machines.
if not os.environ.get("CUDA_HOME") and Path("/usr/local/cuda/bin/nvcc").exists():
    os.environ["CUDA_HOME"] = "/usr/local/cuda"


def read_version() -> str:
    namespace: dict = {}
    exec((ROOT / "lst_fast" / "version.py").read_text(), namespace)
    return namespace["__version__"]


def env_flag(name: str, default: str) -> str:
    value = os.environ.get(name, default).strip().lower()
    if value not in ("auto", "1", "0"):
        sys.exit(f"setup.py: {name} must be auto, 1 or 0, got {value!r}")
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


def extension_modules():
    if os.environ.get("LST_FAST_NO_EXTENSION", "0") == "1":
        print("lst_fast build: LST_FAST_NO_EXTENSION=1, pure-Python package only")
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
        arches = {"8.0", "9.0"}
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                major, minor = torch.cuda.get_device_capability(i)
                arches.add(f"{major}.{minor}")
        os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(sorted(arches, key=Version))
    os.environ.setdefault("MAX_JOBS", str(default_max_jobs()))

    # -ffp-contract=off / --fmad=false: every product and sum is rounded on its own, as in the
    # pure-PyTorch reference, so the kernels can match it bit for bit.
    cxx_flags = ["-O3", "-ffp-contract=off"]  # torch adds -DPy_LIMITED_API for py_limited_api
    cxx_flags += os.environ.get("LST_FAST_CXX_FLAGS", "").split()
    nvcc_flags = ["-O3", "--fmad=false", "-std=c++17", "-lineinfo"]
    nvcc_flags += os.environ.get("LST_FAST_NVCC_FLAGS", "").split()

    # Sources relative to the project (setuptools refuses absolute ones); include paths absolute (ninja).
    def rel(paths):
        return sorted(str(p.relative_to(ROOT)) for p in paths)

    sources = rel([CSRC / "lst_fast.cpp", *(CSRC / "cpu").glob("*.cpp")])
    if build_cuda:
        sources += rel([CSRC / "cuda" / "cuda_ops.cpp", *(CSRC / "cuda").glob("*.cu")])
        extension = CUDAExtension(
            "lst_fast._C",
            sources,
            include_dirs=[str(CSRC)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            py_limited_api=True,
        )
    else:
        extension = CppExtension(
            "lst_fast._C",
            sources,
            include_dirs=[str(CSRC)],
            extra_compile_args={"cxx": cxx_flags},
            py_limited_api=True,
        )

    print(
        "lst_fast build configuration:\n"
        f"  torch {torch.__version__} (CUDA {torch.version.cuda}), CUDA_HOME={CUDA_HOME}, nvcc {nvcc}\n"
        f"  CUDA kernels: {'yes' if build_cuda else 'no'} (LST_FAST_CUDA={want_cuda})"
        + (f", TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}" if build_cuda else "")
        + f"\n  MAX_JOBS={os.environ['MAX_JOBS']}, ninja: {'yes' if shutil.which('ninja') else 'no'}\n"
        f"  sources: {', '.join(sources)}"
    )
    return [extension], {"build_ext": BuildExtension}


ext_modules, cmdclass = extension_modules()

setup(
    version=read_version(),
    packages=find_packages(include=["lst_fast", "lst_fast.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp39"}} if ext_modules else {},
)
