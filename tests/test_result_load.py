"""TraversalResult.save/load: corruption, inconsistent files, devices and odd paths (issue 15)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lst_fast.walk.result import TraversalResult, digest


def result(n=3):
    g = torch.Generator().manual_seed(0)
    return TraversalResult(
        images=torch.rand(n, 1, 4, 4, generator=g),
        label=torch.arange(n),
        initial_confidence=torch.rand(n, generator=g),
        confidence=torch.rand(n, generator=g),
        accepted_steps=torch.arange(n),
        source_correct=torch.ones(n, dtype=torch.bool),
        config={"iterations": 5},
    )


def rewrite(path, change_tensors=None, change_header=None, resign=False):
    """Change a saved result's tensors or header in place; `resign`: with a digest of the changed tensors."""
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["lst_fast"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if change_tensors:
        change_tensors(tensors)
    if change_header:
        change_header(header)
    if resign:
        header["sha256"] = digest(tensors)
    save_file(tensors, str(path), metadata={"lst_fast": json.dumps(header)})


def test_round_trip(tmp_path):
    r = result()
    loaded = TraversalResult.load(r.save(tmp_path / "r.safetensors"))
    for name, t in r.tensors().items():
        assert torch.equal(getattr(loaded, name), t)
    assert loaded.config == r.config


def test_traces_that_share_memory_with_the_outputs_are_saved_as_copies(tmp_path):
    """safetensors refuses tensors that share memory; a trace that is a view of the images saves anyway."""
    r = result()
    shared = torch.stack([r.confidence, r.initial_confidence])  # one buffer behind three tensors
    r.confidence, r.initial_confidence = shared[0], shared[1]
    r.trace_iterations = torch.tensor([5])
    r.trace_images = r.images[None]  # the last iterate recorded: the images themselves
    r.trace_confidence = shared[:1]
    r.trace_target_confidence = shared[1:]
    back = TraversalResult.load(r.save(tmp_path / "r.safetensors"))
    for name, tensor in r.tensors().items():
        assert torch.equal(getattr(back, name), tensor), name
    assert r.trace_images.data_ptr() == r.images.data_ptr()  # the result itself is left as it was


def test_a_changed_data_byte_is_detected(tmp_path):
    path = result().save(tmp_path / "r.safetensors")
    rewrite(path, lambda t: t["confidence"].__setitem__(0, 1.19e38))
    with pytest.raises(ValueError, match="corrupt.*SHA-256"):
        TraversalResult.load(path)


def test_a_file_without_a_digest_is_refused(tmp_path):
    path = result().save(tmp_path / "r.safetensors")
    rewrite(path, change_header=lambda h: h.pop("sha256"))
    with pytest.raises(ValueError, match="has no SHA-256 digest"):
        TraversalResult.load(path)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda t: t.update(images=torch.rand(3), label=torch.arange(99)), "images must be"),
        (lambda t: t.update(label=torch.arange(99)), r"label must have shape \(3,\)"),
        (lambda t: t.update(label=t["label"].float()), "label must have"),
        (lambda t: t.update(trace_iterations=torch.arange(2)), "traces are incomplete"),
    ],
    ids=["images-3", "label-99", "float-label", "partial-traces"],
)
def test_inconsistent_tensors_are_refused(tmp_path, change, match):
    path = result().save(tmp_path / "r.safetensors")
    rewrite(path, change, resign=True)
    with pytest.raises(ValueError, match=match):
        TraversalResult.load(path)


def test_a_non_dict_config_is_refused(tmp_path):
    path = result().save(tmp_path / "r.safetensors")
    rewrite(path, change_header=lambda h: h.update(config=[1, 2]))
    with pytest.raises(ValueError, match="config must be a JSON object"):
        TraversalResult.load(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_loading_onto_cuda_without_a_gpu_says_so(tmp_path):
    path = result().save(tmp_path / "r.safetensors")
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        TraversalResult.load(path, device="cuda")


def test_saving_under_a_file_says_so(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        result().save(tmp_path / "f" / "r.safetensors")


def test_a_full_disk_is_one_clear_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    """safetensors reports ENOSPC as its own SafetensorError; save turns it into one line naming the file
    and the cause, removes its temporary file and leaves the file there before as it was."""
    import safetensors.torch
    from safetensors import SafetensorError

    path = tmp_path / "r.safetensors"
    result(3).save(path)
    before = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")  # what a real full disk leaves in the temporary file
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(
        RuntimeError,
        match=r"^cannot write .*r\.safetensors: the disk is full; a file already "
        r"there is unchanged$",
    ) as caught:
        result(5).save(path)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == 28
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.safetensors"]
    assert len(TraversalResult.load(path)) == 3


def test_a_safetensors_error_that_is_not_about_the_disk_is_not_disguised(tmp_path, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def broken(tensors, filename, metadata=None):
        raise SafetensorError("some other failure")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(SafetensorError, match="some other failure"):
        result().save(tmp_path / "r.safetensors")
    assert list(tmp_path.iterdir()) == []  # no temporary file left


@pytest.mark.parametrize(
    "config, where, kind",
    [
        ({"device": torch.device("cpu")}, "config['device']", "device"),
        ({"mean": torch.tensor([0.5])}, "config['mean']", "Tensor"),
        ({"settings": {"bounds": (0.0, {1, 2})}}, "config['settings']['bounds'][1]", "set"),
        ({3: "three"}, "the key 3 of type int", None),
    ],
)
def test_a_config_value_json_cannot_hold_is_named(tmp_path, config, where, kind):
    r = result()
    r.config = config
    with pytest.raises(TypeError, match="cannot save a result to .*r.safetensors") as caught:
        r.save(tmp_path / "r.safetensors")
    message = str(caught.value)
    assert where in message and (kind is None or f"is a {kind} (" in message), message
    assert "\n" not in message and list(tmp_path.iterdir()) == []
