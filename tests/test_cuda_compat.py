"""The choice between the compiled CUDA kernels and the pure-PyTorch path, decided on the CPU: the driver
and device queries are stubbed, so these tests run (and mean the same) on machines without a GPU."""

import warnings

import pytest
import torch

from lst_fast import ops
from lst_fast.backends import _extension, cuda_compat
from lst_fast.backends.cuda_compat import CudaBuild, unfit_reason

CUDA13 = CudaBuild(cuda="13.0", arches=("7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0"), ptx=("12.0",))
CUDA12 = CudaBuild(cuda="12.8", arches=("7.0", "7.5", "8.0", "8.6", "8.9", "9.0"), ptx=("9.0",))


@pytest.mark.parametrize(
    "build, driver, capability",
    [
        (CUDA13, (13, 0), (9, 0)),  # H100, driver 580
        (CUDA13, (13, 0), (8, 7)),  # Orin: sm_86 machine code runs on 8.7
        (CUDA12, (12, 0), (7, 0)),  # V100 on a 525 driver: minor-version compatibility
        (
            CUDA12,
            (12, 8),
            (12, 0),
        ),  # a Blackwell GPU under the CUDA 12 module: its compute_90 PTX, compiled by the driver
        (CUDA13, (13, 1), (12, 1)),  # sm_120 machine code runs on 12.1
    ],
)
def test_fitting_combinations_use_the_kernels(build, driver, capability):
    assert unfit_reason(build, driver, capability) is None


@pytest.mark.parametrize(
    "build, driver, capability, words",
    [
        (CUDA13, (12, 4), (9, 0), ["CUDA 12.4", ">= 580"]),  # driver too old for CUDA 13
        (CUDA13, None, (9, 0), ["no CUDA driver"]),
        (CUDA13, (13, 0), (7, 0), ["compute capability 7.0", "sm_75"]),  # V100 under the CUDA 13 module
        (CUDA12, (12, 0), (6, 1), ["compute capability 6.1"]),  # Pascal: below both modules
        (CUDA12, (12, 4), (10, 0), ["compiling their PTX", "CUDA 12.8"]),  # PTX newer than the driver
    ],
)
def test_misfits_say_why(build, driver, capability, words):
    reason = unfit_reason(build, driver, capability)
    assert reason is not None
    for word in words:
        assert word in reason, (word, reason)


@pytest.fixture
def stubbed_gpu(monkeypatch):
    """A fake GPU 0 and driver; returns a dict the test fills in (build, driver, name, capability)."""
    fake = {"build": CUDA13, "driver": (13, 0), "name": "Fake GPU", "capability": (9, 0), "release": "580.65.06"}
    monkeypatch.setattr(cuda_compat, "cuda_build", lambda module: fake["build"])
    monkeypatch.setattr(cuda_compat, "driver_cuda_version", lambda: fake["driver"])
    monkeypatch.setattr(cuda_compat, "driver_release", lambda: fake["release"])
    monkeypatch.setattr(cuda_compat, "device_query", lambda index: (fake["name"], fake["capability"]))
    monkeypatch.setattr(cuda_compat, "_checked", {})
    return fake


def test_old_driver_falls_back_with_one_warning(stubbed_gpu):
    stubbed_gpu.update(driver=(12, 2), release="535.104.05", name="Tesla T4", capability=(7, 5))
    with pytest.warns(UserWarning) as caught:
        assert not cuda_compat.cuda_kernels_fit(torch.device("cuda", 0), "_C_cuda13")
    message = str(caught[0].message)
    for word in ("Tesla T4", "535.104.05", "CUDA 12.2", ">= 580", "torch's CUDA 12 build", "pure-PyTorch"):
        assert word in message, (word, message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second use of the same GPU is quiet
        assert not cuda_compat.cuda_kernels_fit(torch.device("cuda", 0), "_C_cuda13")
    assert "CUDA 12.2" in cuda_compat.cuda_checks()["cuda:0"]


def test_unsupported_gpu_falls_back_with_its_fix(stubbed_gpu):
    stubbed_gpu.update(name="Tesla V100-SXM2-16GB", capability=(7, 0))
    with pytest.warns(UserWarning, match="V100.*compute capability 7.0.*sm_70 and newer"):
        assert not cuda_compat.cuda_kernels_fit(torch.device("cuda", 0), "_C_cuda13")


def test_fitting_gpu_is_quiet(stubbed_gpu):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cuda_compat.cuda_kernels_fit(torch.device("cuda", 0), "_C_cuda13")
    assert cuda_compat.cuda_checks() == {"cuda:0": None}


def test_each_gpu_is_checked_on_its_own(stubbed_gpu):
    assert cuda_compat.cuda_kernels_fit(torch.device("cuda", 0), "_C_cuda13")
    stubbed_gpu.update(capability=(6, 0), name="Tesla P100")
    with pytest.warns(UserWarning, match="cuda:1 .Tesla P100"):
        assert not cuda_compat.cuda_kernels_fit(torch.device("cuda", 1), "_C_cuda13")
    assert cuda_compat.cuda_kernels_fit(torch.device("cuda", 0), "_C_cuda13")  # decided once, not asked again


def test_ops_take_the_reference_path_for_an_unfit_gpu(stubbed_gpu, monkeypatch):
    monkeypatch.setattr(ops, "has_native_kernel", lambda name, device_type: True)  # as if the module loaded
    cuda0 = torch.device("cuda", 0)
    assert ops._use_native("orthogonal_step", cuda0, "auto")
    stubbed_gpu.update(capability=(6, 1))
    monkeypatch.setattr(cuda_compat, "_checked", {})
    with pytest.warns(UserWarning, match="compute capability 6.1"):
        assert not ops._use_native("orthogonal_step", cuda0, "auto")
    with pytest.raises(RuntimeError, match="backend='native'"):
        ops._use_native("orthogonal_step", cuda0, "native")
    assert ops._use_native("orthogonal_step", torch.device("cpu"), "auto")  # the CPU is not affected


def test_module_follows_torchs_cuda_major():
    both = ["_C_cuda12", "_C_cuda13"]
    assert _extension.choose_cuda_module("12.8", both) == "_C_cuda12"
    assert _extension.choose_cuda_module("13.0", both) == "_C_cuda13"
    assert _extension.choose_cuda_module(None, both) is None  # a CPU-only torch loads no CUDA module
    # A build with one module serves the other torch too (static CUDA runtime; the first use checks the driver).
    assert _extension.choose_cuda_module("12.8", ["_C_cuda13"]) == "_C_cuda13"
    assert _extension.choose_cuda_module("12.8", []) == "_C_cuda12"  # the error then names what is missing


def test_backend_info_names_the_cuda_module():
    info = _extension.backend_info()
    for key in ("cuda_module", "cuda_module_cuda", "cuda_module_arches", "cuda_module_ptx", "cuda_device_checks"):
        assert key in info
    if torch.version.cuda is None:
        assert info["cuda_module"] is None
    else:
        assert info["cuda_module"] == f"lst_fast.{_extension.cuda_module_name()}"
        assert info["cuda_module"].startswith("lst_fast._C_cuda")


def test_info_command_names_the_cuda_module(capsys):
    import json

    from lst_fast.cli import main

    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"cuda_module", "cuda_module_cuda", "cuda_module_arches", "cuda_module_ptx"} <= set(info)


@pytest.mark.parametrize(
    "arches, ptx, capability, fits",
    [
        (("9.0a",), (), (9, 0), True),  # an arch-specific build runs on its own architecture
        (("9.0a",), (), (9, 1), False),  # ... and on no other, not even a later minor version
        (("8.0", "9.0a"), ("9.0a",), (10, 0), False),  # nor through its PTX
        (("10.0f",), (), (10, 3), True),  # family-specific: the same major version, this minor on
        (("10.3f",), (), (10, 0), False),
        (("10.0f",), (), (12, 0), False),  # another family
        (("9.0",), ("10.0f",), (10, 3), True),  # family PTX compiles within its family
        (("9.0",), ("10.0f",), (12, 0), False),
        (("9.0",), ("9.0",), (12, 0), True),  # plain PTX compiles for anything newer
        (("12.0+PTX",), (), (12, 1), True),  # a "+PTX" written into the list is read as the architecture
    ],
)
def test_suffixed_architectures(arches, ptx, capability, fits):
    build = CudaBuild(cuda="13.0", arches=arches, ptx=ptx)
    assert (unfit_reason(build, (13, 0), capability) is None) == fits


def test_arch_parse_refuses_what_it_cannot_read():
    assert cuda_compat.Arch.parse("10.0f") == cuda_compat.Arch((10, 0), "f")
    assert cuda_compat.Arch.parse("12.0+PTX") == cuda_compat.Arch((12, 0), "")
    for text in ("Hopper", "9", "9.0b", "sm_90"):
        with pytest.raises(ValueError, match="unreadable CUDA architecture"):
            cuda_compat.Arch.parse(text)


def test_unreadable_description_falls_back_once_and_is_remembered(stubbed_gpu, monkeypatch):
    """A description the check cannot read gives one warning and the fallback; the decision is kept, so
    later calls neither raise nor read the description again."""
    reads = []
    build = CudaBuild(cuda="13.0", arches=("9.0", "Hopper"), ptx=())
    monkeypatch.setattr(cuda_compat, "cuda_build", lambda module: reads.append(module) or build)
    stubbed_gpu.update(capability=(8, 0))  # no match before the unreadable entry
    with pytest.warns(UserWarning, match="unreadable.*'Hopper'.*rebuild lst_fast"):
        assert not cuda_compat.cuda_kernels_fit(torch.device("cuda", 0), "_C_cuda13")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not cuda_compat.cuda_kernels_fit(torch.device("cuda", 0), "_C_cuda13")
    assert len(reads) == 1 and "Hopper" in cuda_compat.cuda_checks()["cuda:0"]


def _setup_function(name, *constants):
    """A function of setup.py with the module constants it reads, compiled on their own (importing
    setup.py would run the build)."""
    import ast
    import re
    import sys
    from pathlib import Path

    tree = ast.parse((Path(__file__).resolve().parents[1] / "setup.py").read_text())

    def wanted(node):
        if isinstance(node, ast.Assign):
            return any(getattr(target, "id", None) in constants for target in node.targets)
        return isinstance(node, ast.FunctionDef) and node.name == name

    namespace = {"re": re, "sys": sys}
    body = [node for node in tree.body if wanted(node)]  # in file order: the constants come first
    exec(compile(ast.Module(body=body, type_ignores=[]), "setup.py", "exec"), namespace)
    return namespace[name]


def test_setup_reads_suffixed_arch_lists_and_refuses_names():
    parse = _setup_function("parse_arch_list", "ARCH_ENTRY")
    assert parse("8.0;9.0a 10.0f;12.0+PTX") == (["8.0", "9.0a", "10.0f", "12.0"], ["12.0"])
    assert parse("9.0a+PTX") == (["9.0a"], ["9.0a"])
    for text in ("Hopper", "8.0;native", "9.0+ptx"):
        with pytest.raises(SystemExit, match="TORCH_CUDA_ARCH_LIST entry"):
            parse(text)
    # Whatever setup.py writes into the description, lst_fast reads.
    arches, ptx = parse("7.5;9.0a;10.0f;12.0+PTX")
    for a in arches + ptx:
        cuda_compat.Arch.parse(a)
