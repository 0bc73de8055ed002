"""precision="bf16", the cached working copy of the model, BatchNorm folding and batching."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lst_fast
from conftest import PerSample, tiny_cnn
from lst_fast import batching, prepared_model
from lst_fast.reference import class_probability

SETTINGS = dict(step_size=0.1, threshold=0.005, adv_step_size=2e-3, init_noise=2 / 255)


def images(n, c=1, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g), torch.rand(n, c, size, size, generator=g)


class Residual(nn.Module):
    """conv -> bn pairs written in forward code (not in a Sequential), plus a bn that must not fold."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.bn_after_add = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)
        for bn in (self.bn1, self.bn2, self.bn_after_add):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn_after_add(h + self.bn2(self.conv2(h)))
        return self.head(h.mean((2, 3)))


class DataDependent(nn.Module):
    """Control flow on values: torch.fx cannot trace it, so nothing may be folded."""

    def __init__(self):
        super().__init__()
        self.net = tiny_cnn(scale=12)

    def forward(self, x):
        return self.net(x) if float(x.sum()) >= 0 else -self.net(x)


def test_fold_batchnorm_matches_the_model_and_folds_only_conv_bn_pairs():
    model = Residual().eval()
    x = torch.rand(5, 3, 8, 8)
    folded, count = prepared_model.fold_batchnorm(copy.deepcopy(model))
    assert count == 2  # bn1 and bn2; bn_after_add follows an addition
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == 1
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_leaves_untraceable_models_alone():
    model = DataDependent().eval()
    folded, count = prepared_model.fold_batchnorm(model)
    assert count == 0 and folded is model


@pytest.mark.parametrize("make", [lambda: tiny_cnn(channels=3, scale=12), Residual])
def test_bf16_never_modifies_the_model(make):
    model = make()
    model.train()
    before = copy.deepcopy(model.state_dict())
    x, y = images(4, c=3, seed=2)
    r = lst_fast.traverse(model, x, y, iterations=5, precision="bf16", **SETTINGS)
    assert r.config["precision"] == "bf16" and r.config["model_copy"]["input_dtype"] == "bfloat16"
    assert model.training
    for name, value in model.state_dict().items():
        assert value.dtype == before[name].dtype and torch.equal(value, before[name]), name
        assert value.is_contiguous(), name  # no channels-last conversion leaked into the user's model
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_bf16_outputs_are_fp32_in_bounds_and_report_the_model_as_given():
    model = tiny_cnn(channels=3, scale=12)
    x, y = images(6, c=3, seed=3)
    r = lst_fast.traverse(model, x, y, iterations=30, precision="bf16", **SETTINGS)
    assert r.images.dtype == torch.float32 and r.confidence.dtype == torch.float32
    assert bool(((r.images >= 0) & (r.images <= 1)).all())
    assert bool((r.accepted_steps <= 30).all()) and bool((r.accepted_steps > 0).any())
    model.eval()
    with torch.no_grad():  # the reported confidences are the fp32 model's, not the bf16 copy's
        expected = class_probability(model(r.images), r.label).float()
        initial = class_probability(model(x), r.label).float()
    torch.testing.assert_close(r.confidence, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.initial_confidence, initial, rtol=1e-5, atol=1e-6)
    assert torch.equal(r.label, model(x).argmax(1))


def test_working_copy_is_cached_and_rebuilt_after_the_weights_change():
    model = tiny_cnn(scale=12)
    probe = torch.rand(2, 1, 8, 8)
    first = prepared_model.prepare(model, "bf16", probe)
    assert prepared_model.prepare(model, "bf16", probe) is first
    assert first.module is not model and first.is_copy
    with torch.no_grad():
        model[0].weight.mul_(2)  # an in-place update, as an optimizer step does
    rebuilt = prepared_model.prepare(model, "bf16", probe)
    assert rebuilt is not first
    assert rebuilt.fingerprint == prepared_model._fingerprint(model)
    prepared_model.clear_cache()
    assert prepared_model.prepare(model, "bf16", probe) is not rebuilt


def test_weight_change_changes_the_walk():
    model = tiny_cnn(scale=12)
    x, y = images(4, seed=8)
    settings = dict(iterations=10, init_noise=0.0, step_size=0.1, threshold=0.05, precision="bf16")
    a = lst_fast.traverse(model, x, y, **settings)
    with torch.no_grad():
        model[5].weight.mul_(0.1)  # a stale cached bf16 copy would walk as before
    b = lst_fast.traverse(model, x, y, **settings)
    current = prepared_model.PreparedModel(prepared_model.prepare(model, "bf16", x).module, torch.bfloat16,
                                         False, 0, (), is_copy=True)
    with torch.no_grad():
        fresh_logits = model.eval()(x)
    torch.testing.assert_close(current(x).float(), fresh_logits, rtol=0.05, atol=0.05)
    assert not torch.equal(a.images, b.images)


class Uncopyable(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = tiny_cnn(scale=12)

    def forward(self, x):
        return self.net(x)

    def __deepcopy__(self, memo):
        raise TypeError("this model holds a handle that cannot be copied")


def test_exact_mode_runs_the_model_itself_and_bf16_needs_a_copy():
    model = Uncopyable()
    x, y = images(3, seed=9)
    exact = lst_fast.traverse(model, x, y, iterations=5, **SETTINGS)
    assert exact.config["model_copy"]["copy"] is False
    assert prepared_model.prepare(model, "fp32", x).module is model
    reference = lst_fast.traverse(model.net, x, y, iterations=5, generator=None, **{**SETTINGS, "init_noise": 0})
    plain = lst_fast.traverse(model, x, y, iterations=5, **{**SETTINGS, "init_noise": 0})
    assert torch.equal(plain.images, reference.images)
    with pytest.raises(ValueError, match="precision='bf16'.*could not be copied"):
        lst_fast.traverse(model, x, y, iterations=5, precision="bf16", **SETTINGS)


@pytest.mark.parametrize("size", [1, 2, 4, 5])
def test_batches_give_the_whole_set_result(size):
    model = PerSample(tiny_cnn(scale=12))  # batch-independent arithmetic, so equality is exact
    x, y = images(5, seed=10)
    g = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    whole = lst_fast.traverse(model, x, y, iterations=20, generator=g(), record_every=10, **SETTINGS)
    split = lst_fast.traverse(model, x, y, iterations=20, generator=g(), record_every=10, batch_size=size,
                              **SETTINGS)
    assert split.config["batch_size_used"] == size
    for name, value in whole.tensors().items():
        assert torch.equal(getattr(split, name), value), name


def test_progress_bar_covers_every_batch(capsys):
    model = tiny_cnn(scale=12)
    x, y = images(5, seed=12)
    lst_fast.traverse(model, x, y, iterations=4, batch_size=2, progress=True, **SETTINGS)
    assert "12/12" in capsys.readouterr().err


@pytest.mark.parametrize("bad, match", [
    (dict(precision="fp16"), "precision must be one of"),
    (dict(batch_size=0), "batch_size must be a positive int"),
    (dict(batch_size=2.5), "batch_size must be a positive int"),
    (dict(batch_size=True), "batch_size must be a positive int"),
])
def test_bad_settings_name_the_argument(bad, match):
    with pytest.raises(ValueError, match=match):
        lst_fast.LevelSetTraversal(tiny_cnn(), **bad)
    with pytest.raises(TypeError, match="graph must be True or False"):
        lst_fast.LevelSetTraversal(tiny_cnn(), graph="yes")


def test_batch_size_for_free_memory():
    gib = 2**30
    assert batching.batch_size_for(10 * gib, gib / 100, 10_000) == 696  # 70% of 1000, a multiple of 8
    assert batching.batch_size_for(10 * gib, gib / 100, 300) == 300
    assert batching.batch_size_for(gib, 2 * gib, 50) == 1  # never below one image
    assert batching.batch_size_for(gib, gib / 5, 50) == 3  # below 8: no rounding
    assert batching.batch_size_for(gib, 0, 50) == 50
    assert batching.batch_size_for(gib, 1, 0) == 0


@pytest.mark.parametrize("name", ["cnn", "cnn-robust", "vit"])
def test_bf16_quality_matches_exact_mode_on_the_shipped_models(name):
    """The issue's parity bar: mean RMS to target and mean final confidence within 0.01, the fraction
    still the source class within 1 %, 100 Fashion-MNIST test images, the demo's settings."""
    from lst_fast.data.sources import open_image_set
    from lst_fast.models import load_model
    from lst_fast.pairing import round_targets

    data = open_image_set("fashion-mnist-sample")
    x = data.get(torch.arange(100))
    y = x[round_targets(data.labels[:100], 1, 0)[0]]
    model = load_model(name)
    runs = {}
    for precision in ("fp32", "bf16"):
        r = lst_fast.traverse(model, x, y, step_size=5e-2, iterations=400, precision=precision,
                              generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            still = (model(r.images).argmax(1) == r.label).float().mean()
        runs[precision] = ((r.images - y).flatten(1).pow(2).mean(1).sqrt().mean(), r.confidence.mean(), still)
    (rms32, conf32, still32), (rms16, conf16, still16) = runs["fp32"], runs["bf16"]
    assert abs(rms16 - rms32) <= 0.01, (rms16, rms32)
    assert abs(conf16 - conf32) <= 0.01, (conf16, conf32)
    assert abs(still16 - still32) <= 0.01, (still16, still32)


def test_eval_config_guard_knows_precision_and_accepts_older_folders(tmp_path):
    import dataclasses
    import json

    from lst_fast.evaluation import EvalConfig, _check_or_write_config

    older = dataclasses.asdict(EvalConfig())
    del older["precision"]  # a folder written before the setting existed ran in fp32
    (tmp_path / "config.json").write_text(json.dumps(older))
    _check_or_write_config(tmp_path, EvalConfig())
    with pytest.raises(ValueError, match="precision"):
        _check_or_write_config(tmp_path, EvalConfig(precision="bf16"))
    with pytest.raises(ValueError, match="precision must be"):
        EvalConfig(precision="fp8").validate()


def test_staged_on_device_yields_every_job_in_order():
    from lst_fast.evaluation import staged_on_device

    jobs = [(0, 0), (0, 1), (1, 0)]
    seen = [(job, [t.tolist() for t in tensors])
            for job, tensors in staged_on_device(jobs, lambda j: [torch.tensor(j)], torch.device("cpu"))]
    assert seen == [(j, [list(j)]) for j in jobs]
    assert list(staged_on_device([], lambda j: [], torch.device("cpu"))) == []


def test_compile_model_runs_the_compiled_copy_and_needs_bf16():
    model = tiny_cnn(channels=3, scale=12)
    x, y = images(4, c=3, seed=13)
    with pytest.raises(ValueError, match="compile_model=True needs precision='bf16'"):
        lst_fast.traverse(model, x, y, iterations=2, compile_model=True)
    plain = lst_fast.traverse(model, x, y, iterations=10, precision="bf16", init_noise=0.0)
    compiled = lst_fast.traverse(model, x, y, iterations=10, precision="bf16", init_noise=0.0, compile_model=True)
    assert compiled.config["model_copy"]["compiled"] and not plain.config["model_copy"]["compiled"]
    assert bool(((compiled.images >= 0) & (compiled.images <= 1)).all())
    # Compiled kernels round differently in bf16; the walks stay close.
    assert float((compiled.images - plain.images).abs().max()) < 0.05


def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch):
    monkeypatch.setattr(prepared_model, "cpu_has_bf16_instructions", lambda: False)
    prepared_model.clear_cache()
    x, y = images(2, seed=14)
    with pytest.warns(RuntimeWarning, match="without bf16 instructions"):
        lst_fast.traverse(tiny_cnn(scale=12), x, y, iterations=2, precision="bf16")
    assert lst_fast.backend_info()["cpu_bf16_instructions"] in (True, False, None)


def test_graph_replay_schedule_runs_each_iteration_once(monkeypatch):
    """The CUDA-graph wrapper's bookkeeping, with the CUDA calls stubbed: warm-up calls run eagerly,
    one capture follows, and every later call is one replay, so each iteration happens exactly once."""
    import contextlib
    import types

    from lst_fast import traversal

    class Stream:
        def __init__(self, *args):
            pass

        def wait_stream(self, other):
            pass

    captured = []

    def capture(fn):  # a real capture records without running; the stub replays by calling fn
        captured.append(fn)
        return types.SimpleNamespace(replay=fn)

    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(traversal, "_capture", capture)
    for iterations, expect_capture in ((0, False), (2, False), (3, False), (4, True), (10, True)):
        calls = []
        run = traversal._graphed(lambda: calls.append(1), torch.device("cuda"), iterations)
        captured.clear()
        for _ in range(iterations):
            run()
        assert len(calls) == iterations and bool(captured) == expect_capture


def test_backend_flags_are_restored_after_each_mode():
    flags = lambda: (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,  # noqa: E731
                     torch.backends.cuda.matmul.allow_tf32)
    before = flags()
    x, y = images(2, seed=15)
    for precision in ("fp32", "bf16"):
        lst_fast.traverse(tiny_cnn(scale=12), x, y, iterations=2, precision=precision)
        assert flags() == before


def test_cpu_batch_rule():
    mib = 2**20
    assert batching.cpu_batch_size(mib / 4, 10_000, None) == 128  # 32 MiB of saved activations
    assert batching.cpu_batch_size(40 * mib, 10_000, None) == batching.CPU_MIN_BATCH  # big models: 16
    assert batching.cpu_batch_size(40 * mib, 10_000, 400 * mib) == 5  # never past half the memory
    assert batching.cpu_batch_size(1, 50, None) == 50
    assert batching.cpu_batch_size(2**40, 50, 1) == 1


def test_saved_bytes_per_image_counts_what_grows_with_the_batch():
    weight = torch.rand(1, 50)

    def run_probe(k):
        x = torch.rand(k, 50, requires_grad=True)
        (x.exp() * weight).sum().backward()  # exp saves its (k, 50) result, mul only the constant weight

    per_image = batching.saved_bytes_per_image(run_probe)
    assert per_image == 50 * 4  # exp's fp32 result per image; the weight does not grow with k
    assert batching.available_memory() is None or batching.available_memory() > 0


def test_cpu_automatic_batches_are_reproducible():
    model = tiny_cnn(scale=12)
    x, y = images(40, seed=16)
    a = lst_fast.traverse(model, x, y, iterations=5, generator=torch.Generator().manual_seed(0))
    b = lst_fast.traverse(model, x, y, iterations=5, generator=torch.Generator().manual_seed(0))
    assert a.config["batch_size_used"] == b.config["batch_size_used"] >= batching.CPU_MIN_BATCH
    assert torch.equal(a.images, b.images)


def test_folding_leaves_the_traced_model_as_it_was():
    model = Residual().eval()
    before = copy.deepcopy(model.state_dict())
    folded, count = prepared_model.fold_batchnorm(model)
    assert count == 2 and folded is not model
    assert isinstance(model.bn1, nn.BatchNorm2d) and isinstance(model.bn2, nn.BatchNorm2d)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_no_host_reads_inside_the_loop(monkeypatch, precision):
    """Host reads of tensor values (item, float, bool, ...) would stall a GPU every iteration; their
    number must not grow with the iteration count (the progress bar is off)."""
    counts = {"n": 0}
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            counts["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    model = tiny_cnn(scale=12)
    x, y = images(6, seed=17)
    lst_fast.traverse(model, x, y, iterations=1, precision=precision)  # builds and caches the bf16 copy
    per_run = []
    for iterations in (5, 40):
        counts["n"] = 0
        lst_fast.traverse(model, x, y, iterations=iterations, precision=precision, record_every=0)
        per_run.append(counts["n"])
    assert per_run[0] == per_run[1], per_run


class OutOfMemoryAbove(nn.Module):
    """Raises the out-of-memory error a GPU would for batches larger than `limit` (with gradients)."""

    def __init__(self, net, limit):
        super().__init__()
        self.net, self.limit = net, limit

    def forward(self, x):
        if torch.is_grad_enabled() and x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"simulated: {x.shape[0]} images")
        return self.net(x)


def test_automatic_batches_halve_after_running_out_of_memory():
    net = PerSample(tiny_cnn(scale=12))
    x, y = images(40, seed=18)
    g = lambda: torch.Generator().manual_seed(19)  # noqa: E731
    with pytest.warns(RuntimeWarning, match="continuing with batches of"):
        r = lst_fast.traverse(OutOfMemoryAbove(net, 7), x, y, iterations=6, generator=g(), **SETTINGS)
    assert r.config["batch_size_used"] <= 7
    reference = lst_fast.traverse(net, x, y, iterations=6, generator=g(), batch_size=5, **SETTINGS)
    assert torch.equal(r.images, reference.images)  # nothing lost or repeated
    with pytest.raises(torch.OutOfMemoryError, match="batch_size=5 or smaller"):
        lst_fast.traverse(OutOfMemoryAbove(net, 7), x, y, iterations=2, batch_size=10, **SETTINGS)
    with pytest.raises(torch.OutOfMemoryError, match="even one image does not fit"):
        lst_fast.traverse(OutOfMemoryAbove(net, 0), x, y, iterations=2, **SETTINGS)


def test_bf16_copy_of_a_timm_resnet_folds_every_batchnorm():
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    x = torch.rand(3, 3, 64, 64)
    r = lst_fast.traverse(model, x, x.flip(0), iterations=2, precision="bf16")
    assert r.config["model_copy"]["folded_batchnorms"] == 20  # every conv -> bn pair, shortcuts included
    assert r.config["model_copy"]["channels_last"]
