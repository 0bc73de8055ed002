"""traverse(): exactness against the paper's two-pass loop, invariants, API contract."""
from __future__ import annotations

import copy

import pytest
import torch

import lst_fast
from conftest import PerSample, tiny_cnn, two_pass_lst

SETTINGS = dict(step_size=0.1, threshold=0.005, adv_step_size=2e-3, init_noise=2 / 255)


def images(n, c=1, size=8, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g).to(device), torch.rand(n, c, size, size, generator=g).to(device)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_one_pass_equals_two_pass_bit_for_bit(backend):
    if backend == "native" and lst_fast.backend_info()["cpu"] != "native":
        pytest.skip("compiled CPU kernels not available")
    model = tiny_cnn(scale=12)
    x, y = images(12)
    result = lst_fast.traverse(model, x, y, iterations=80, generator=torch.Generator().manual_seed(7),
                               backend=backend, **SETTINGS)
    oracle = two_pass_lst(model, x, y, result.label, iterations=80, generator=torch.Generator().manual_seed(7),
                          **SETTINGS)
    steps = result.accepted_steps
    assert (steps > 0).any() and (steps < 80).any(), "the test needs both accepted and rejected steps"
    assert torch.equal(result.images, oracle)


def test_one_pass_equals_two_pass_with_normalizer_and_rgb():
    net = tiny_cnn(channels=3, scale=12, seed=1)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    model = torch.nn.Sequential(_Normalize(mean, std), net)
    x, y = images(6, c=3, seed=2)
    r = lst_fast.traverse(net, x, y, iterations=40, mean=mean, std=std, generator=torch.Generator().manual_seed(1),
                          **SETTINGS)
    oracle = two_pass_lst(model, x, y, r.label, iterations=40, generator=torch.Generator().manual_seed(1), **SETTINGS)
    assert torch.equal(r.images, oracle)


class _Normalize(torch.nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.net_input(x)

    def net_input(self, x):
        return (x - self.mean.float()) / self.std.float()


def test_invariants_bounds_threshold_and_counts():
    model = tiny_cnn(scale=12)
    x, y = images(16, seed=3)
    r = lst_fast.traverse(model, x, y, iterations=60, record_every=1, **SETTINGS)
    assert r.images.min() >= 0 and r.images.max() <= 1
    assert r.trace_images.min() >= 0 and r.trace_images.max() <= 1
    # Every accepted iterate stays within threshold of p0; the start (noise only) is exempt.
    drop = r.initial_confidence[None] - r.trace_confidence[1:]
    assert (drop < SETTINGS["threshold"] + 1e-6).all()
    assert ((r.accepted_steps >= 0) & (r.accepted_steps <= 60)).all()
    assert torch.equal(r.trace_iterations, torch.arange(61))
    with torch.no_grad():
        p_final = torch.softmax(model.eval()(r.images).double(), 1).gather(1, r.label[:, None]).squeeze(1)
    torch.testing.assert_close(r.confidence, p_final.float(), rtol=0, atol=1e-6)
    # The walk moves toward the targets.
    assert ((r.images - y).flatten(1).norm(dim=1) < (x - y).flatten(1).norm(dim=1)).all()


def test_result_is_independent_of_batch_composition():
    model = PerSample(tiny_cnn(scale=12))
    x, y = images(6, seed=4)
    batch = lst_fast.traverse(model, x, y, iterations=40, init_noise=0.0,
                              **{k: v for k, v in SETTINGS.items() if k != "init_noise"})
    for i in range(x.shape[0]):
        alone = lst_fast.traverse(model, x[i : i + 1], y[i : i + 1], iterations=40, init_noise=0.0,
                                  **{k: v for k, v in SETTINGS.items() if k != "init_noise"})
        assert torch.equal(alone.images[0], batch.images[i])
        assert alone.accepted_steps[0] == batch.accepted_steps[i]
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    shuffled = lst_fast.traverse(model, x[perm], y[perm], iterations=40, init_noise=0.0,
                                 **{k: v for k, v in SETTINGS.items() if k != "init_noise"})
    assert torch.equal(shuffled.images, batch.images[perm])


def test_generator_makes_runs_reproducible():
    model = tiny_cnn(scale=12)
    x, y = images(5, seed=5)
    a = lst_fast.traverse(model, x, y, iterations=20, generator=torch.Generator().manual_seed(3), **SETTINGS)
    b = lst_fast.traverse(model, x, y, iterations=20, generator=torch.Generator().manual_seed(3), **SETTINGS)
    c = lst_fast.traverse(model, x, y, iterations=20, generator=torch.Generator().manual_seed(4), **SETTINGS)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_model_is_restored_and_untouched():
    model = tiny_cnn(scale=12)
    model.train()
    model[1].eval()  # a mixed state must come back as it was
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = copy.deepcopy(model.state_dict())
    x, y = images(4, seed=6)
    lst_fast.traverse(model, x, y, iterations=5, **SETTINGS)
    assert model.training and not model[1].training and model[0].training
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # BatchNorm statistics were not updated
    for p in model.parameters():
        assert torch.equal(p.grad, torch.full_like(p, 0.5))
        assert p.requires_grad


def test_dtype_device_order_and_single_target_image():
    model = tiny_cnn(scale=12)
    x, y = images(4, seed=7)
    r64 = lst_fast.traverse(model.double(), x.double(), y[0].double(), iterations=5, **SETTINGS)
    assert r64.images.dtype == torch.float64 and r64.images.shape == x.shape
    model = tiny_cnn(scale=12)
    r = lst_fast.traverse(model, x, y[0], iterations=5, **SETTINGS)
    expanded = lst_fast.traverse(model, x, y[:1].expand_as(x), iterations=5, init_noise=0.0,
                                 **{k: v for k, v in SETTINGS.items() if k != "init_noise"})
    single = lst_fast.traverse(model, x, y[0], iterations=5, init_noise=0.0,
                               **{k: v for k, v in SETTINGS.items() if k != "init_noise"})
    assert torch.equal(expanded.images, single.images)
    assert r.images.dtype == x.dtype and r.images.device == x.device
    assert r.label.shape == (4,) and r.initial_confidence.shape == (4,) and r.source_correct.all()


def test_channels_last_input_gives_the_same_result():
    model = tiny_cnn(channels=3, scale=12)
    x, y = images(4, c=3, seed=8)
    a = lst_fast.traverse(model, x, y, iterations=15, generator=torch.Generator().manual_seed(0), **SETTINGS)
    b = lst_fast.traverse(model, x.contiguous(memory_format=torch.channels_last), y,
                          iterations=15, generator=torch.Generator().manual_seed(0), **SETTINGS)
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=1e-5)
    assert torch.equal(a.accepted_steps, b.accepted_steps)


def test_label_given_flags_misclassified_sources():
    model = tiny_cnn(scale=12)
    x, y = images(6, seed=9)
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    label = pred.clone()
    label[0] = (pred[0] + 1) % 5
    r = lst_fast.traverse(model, x, y, label=label, iterations=5, **SETTINGS)
    assert torch.equal(r.label, label)
    assert r.source_correct.tolist() == [False] + [True] * 5


def test_zero_iterations_and_empty_batch():
    model = tiny_cnn(scale=12)
    x, y = images(3, seed=10)
    r = lst_fast.traverse(model, x, y, iterations=0, init_noise=0.0)
    assert torch.equal(r.images, x) and (r.accepted_steps == 0).all()
    torch.testing.assert_close(r.confidence, r.initial_confidence)
    empty = lst_fast.traverse(model, x[:0], y[:0], iterations=3)
    assert empty.images.shape == (0, 1, 8, 8) and empty.accepted_steps.shape == (0,)


def test_zero_gradient_steps_straight_to_target():
    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor([3.0, 0.0, 0.0]))

        def forward(self, x):
            return self.bias.expand(x.shape[0], 3) + 0 * x.flatten(1).sum(1, keepdim=True)

    x, y = images(2, seed=11)
    r = lst_fast.traverse(Constant(), x, y, iterations=10, init_noise=0.0, adv_step_size=0.0, step_size=0.1)
    assert torch.isfinite(r.images).all()
    expected = x.clone()
    for _ in range(10):
        expected = expected + 0.1 * (y - expected)
    torch.testing.assert_close(r.images, expected, rtol=0, atol=1e-6)
    assert (r.accepted_steps == 10).all()


def test_class_form_repr_and_recording_on_cpu():
    model = tiny_cnn(scale=12)
    lst = lst_fast.LevelSetTraversal(model, iterations=7, record_every=3, record_device="cpu", threshold=0.1)
    text = repr(lst)
    assert "iterations=7" in text and "threshold=0.1" in text and "Sequential" in text
    x, y = images(3, seed=12)
    r = lst(x, y)
    assert r.trace_iterations.tolist() == [0, 3, 6, 7]
    assert r.trace_images.shape == (4, 3, 1, 8, 8) and r.trace_images.device.type == "cpu"
    assert r.trace_target_confidence.shape == (4, 3)
    assert torch.equal(r.trace_images[-1], r.images)


def test_save_and_load_roundtrip(tmp_path):
    model = tiny_cnn(scale=12)
    x, y = images(3, seed=13)
    r = lst_fast.traverse(model, x, y, iterations=4, record_every=2, **SETTINGS)
    path = r.save(tmp_path / "sub" / "run.safetensors")
    loaded = lst_fast.TraversalResult.load(path)
    for name, t in r.tensors().items():
        assert torch.equal(getattr(loaded, name), t), name
    assert loaded.config["iterations"] == 4 and loaded.config["lst_fast"] == lst_fast.__version__
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_progress_bar_runs(capsys):
    model = tiny_cnn(scale=12)
    x, y = images(2, seed=14)
    lst_fast.traverse(model, x, y, iterations=3, progress=True)
    assert "LST" in capsys.readouterr().err
