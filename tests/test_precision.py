"""precision="bf16", the per-call working copy of the model, BatchNorm folding and batching."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lst_fast
from lst_fast.backends.confidence import class_probability
from lst_fast.walk import batching, prepared_model
from conftest import PerSample, tiny_cnn

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
    folded = copy.deepcopy(model)
    replaced = prepared_model.fold_batchnorm(folded)
    assert len(replaced) == 4  # bn1 and bn2 with their convolutions; bn_after_add follows an addition
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == 1
    assert type(folded) is Residual  # folded in place: the model's own class and forward
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_leaves_untraceable_models_alone():
    model = DataDependent().eval()
    before = dict(model.named_modules())
    assert prepared_model.fold_batchnorm(model) == [] and dict(model.named_modules()) == before


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


def test_working_copy_is_built_per_call_from_the_model_as_it_is():
    model = tiny_cnn(scale=12)
    probe = torch.rand(2, 1, 8, 8)
    first = prepared_model.prepare(model, "bf16", probe)
    assert first.module is not model and first.is_copy
    with torch.no_grad():
        model[0].weight.mul_(2)  # an in-place update, as an optimizer step does
    rebuilt = prepared_model.prepare(model, "bf16", probe)
    assert rebuilt is not first
    with torch.no_grad():
        new, old = model.eval()(probe), first(probe).float()
        torch.testing.assert_close(rebuilt(probe).float(), new, rtol=0.05, atol=0.05)
    assert not torch.allclose(old, new, rtol=0.05, atol=0.05)  # the first copy is of the old weights


def test_weight_change_changes_the_walk():
    model = tiny_cnn(scale=12)
    x, y = images(4, seed=8)
    settings = dict(iterations=10, init_noise=0.0, step_size=0.1, threshold=0.05, precision="bf16")
    a = lst_fast.traverse(model, x, y, **settings)
    with torch.no_grad():
        model[5].weight.mul_(0.1)  # a stale cached bf16 copy would walk as before
    b = lst_fast.traverse(model, x, y, **settings)
    current = prepared_model.PreparedModel(
        prepared_model.prepare(model, "bf16", x).module, input_dtype=torch.bfloat16, is_copy=True
    )
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
    split = lst_fast.traverse(model, x, y, iterations=20, generator=g(), record_every=10, batch_size=size, **SETTINGS)
    assert split.config["batch_size_used"] == size
    for name, value in whole.tensors().items():
        assert torch.equal(getattr(split, name), value), name


def test_progress_bar_covers_every_batch(capsys):
    model = tiny_cnn(scale=12)
    x, y = images(5, seed=12)
    lst_fast.traverse(model, x, y, iterations=4, batch_size=2, progress=True, **SETTINGS)
    assert "12/12" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(precision="fp16"), "precision must be one of"),
        (dict(batch_size=0), "batch_size must be an integer >= 1 or None"),
        (dict(batch_size=2.5), "batch_size must be an integer >= 1 or None"),
        (dict(batch_size=True), "batch_size must be an integer >= 1 or None"),
    ],
)
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


def test_staged_on_device_yields_every_job_in_order():
    from lst_fast.evaluation.runner import staged_on_device

    jobs = [(0, 0), (0, 1), (1, 0)]
    seen = [
        (job, [t.tolist() for t in tensors])
        for job, tensors in staged_on_device(jobs, lambda j: [torch.tensor(j)], torch.device("cpu"))
    ]
    assert seen == [(j, [list(j)]) for j in jobs]
    assert list(staged_on_device([], lambda j: [], torch.device("cpu"))) == []


def test_compile_model_runs_the_compiled_copy_and_needs_bf16():
    # A linear model: inductor turns each pointwise kernel into C++ and runs a compiler on it (about 3 s
    # apiece on a 2-core CPU); this one lowers to matrix products only, and the compiled-copy path under
    # test (wrapping, the walk's calls, the config) is the same for any model.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    with torch.no_grad():
        model[1].weight.mul_(8)  # confident predictions, as tiny_cnn(scale=...) gives
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
    x, y = images(2, seed=14)
    with pytest.warns(RuntimeWarning, match=r"without bf16 instructions .* about 9x slower than precision='fp32'"):
        lst_fast.traverse(tiny_cnn(scale=12), x, y, iterations=2, precision="bf16")
    assert lst_fast.backend_info()["cpu_bf16_instructions"] in (True, False, None)


class _StubCuda:
    """torch.cuda's stream, device and graph calls replaced by recorders, so the CUDA-graph bookkeeping runs
    on the CPU: a captured graph "replays" by calling the iteration."""

    def __init__(self, monkeypatch):
        import contextlib
        import types

        self.current_device = "cuda:0"
        self.streams, self.captures = [], []
        stub = self

        class Stream:
            def __init__(self, device=None):
                self.device = str(device)
                stub.streams.append(self)

            def wait_stream(self, other):
                pass

        @contextlib.contextmanager
        def device(d):
            saved, stub.current_device = stub.current_device, str(d)
            try:
                yield
            finally:
                stub.current_device = saved

        class CUDAGraph:
            def replay(self):
                self.fn()

        @contextlib.contextmanager
        def graph(g, stream=None, **kwargs):
            stub.captures.append({"device": stub.current_device, "stream": stream})
            stub.capturing = g
            yield

        monkeypatch.setattr(torch.cuda, "Stream", Stream)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream(device))
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "device", device)
        monkeypatch.setattr(torch.cuda, "CUDAGraph", CUDAGraph)
        monkeypatch.setattr(torch.cuda, "graph", graph)
        self.types = types


def test_graph_replay_schedule_runs_each_iteration_once(monkeypatch):
    """The CUDA-graph wrapper's bookkeeping, with the CUDA calls stubbed: warm-up calls run eagerly,
    one capture follows (recording, not running), and every later call is one replay, so each iteration
    happens exactly once. Capture runs under the input's device (cuda:1 while cuda:0 is current), on a
    side stream of that device."""
    from lst_fast.walk import graph_replay

    stub = _StubCuda(monkeypatch)
    for iterations, expect_capture in ((0, False), (2, False), (3, False), (4, True), (10, True)):
        calls = []

        def iteration(calls=calls):
            if stub.captures and getattr(stub.capturing, "fn", None) is None:
                stub.capturing.fn = iteration  # the capture records the iteration instead of running it
                return
            calls.append(1)

        stub.captures.clear()
        run = graph_replay.GraphReplay(torch.device("cuda:1")).runner(iteration, iterations)
        for _ in range(iterations):
            run()
        assert len(calls) == iterations and bool(stub.captures) == expect_capture
        if expect_capture:
            (capture,) = stub.captures
            assert capture["device"] == "cuda:1" and capture["stream"].device == "cuda:1"
        assert stub.current_device == "cuda:0"


def test_graph_replay_makes_one_side_stream_for_its_warmups_and_captures(monkeypatch):
    """The warm-up iterations and the capture share one side stream, made once (the caching allocator
    reuses a block only on the stream that freed it), across batches of one shape and of a new shape."""
    from lst_fast.walk import graph_replay
    from lst_fast.walk import state as walk_state

    stub = _StubCuda(monkeypatch)
    # The current stream (not counted as a side stream), and what the stubbed capture returns as its graph.
    current = stub.types.SimpleNamespace(wait_stream=lambda other: None, replay=lambda: None)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current)
    replay = graph_replay.GraphReplay(torch.device("cuda:0"))
    monkeypatch.setattr(graph_replay, "capture", lambda fn, stream: stub.captures.append(stream) or current)

    def state(n):
        fixed = walk_state.WalkConstants(torch.zeros(n, 2), torch.zeros(n, dtype=torch.long), torch.ones(n))
        walk = walk_state.WalkState(
            torch.zeros(n, 2), torch.zeros(n, 2), torch.zeros(n, 2), torch.ones(n), torch.zeros(n, dtype=torch.long)
        )
        return fixed, walk

    for n in (4, 4, 3):  # a second batch of the shape, then a new shape (a new capture)
        replay.adopt(*state(n))
        run = replay.runner(lambda: None, iterations=8)
        for _ in range(8):
            run()
    assert len(stub.streams) == 1
    assert len(stub.captures) == 2 and all(s is stub.streams[0] for s in stub.captures)


def test_graph_replay_reuses_one_capture_for_batches_of_one_shape(monkeypatch):
    """Later batches of the captured shape copy their tensors into the captured ones and replay at once;
    a batch of another shape gets its own capture."""
    from lst_fast.walk import graph_replay
    from lst_fast.walk import state as walk_state

    _StubCuda(monkeypatch)
    replay = graph_replay.GraphReplay(torch.device("cuda:0"))

    def batch(n, value):
        fixed = walk_state.WalkConstants(
            target=torch.full((n, 2), value),
            label=torch.zeros(n, dtype=torch.long),
            p0=torch.ones(n, dtype=torch.float64),
        )
        state = walk_state.WalkState(
            x=torch.full((n, 2), value),
            grad=torch.zeros(n, 2),
            adv=torch.zeros(n, 2),
            confidence=torch.ones(n, dtype=torch.float64),
            accepted_steps=torch.zeros(n, dtype=torch.long),
        )
        return fixed, state

    first = replay.adopt(*batch(4, 1.0))
    replay.graph = object()  # as after a capture
    second = replay.adopt(*batch(4, 2.0))
    assert second[1].x is first[1].x and float(second[1].x[0, 0]) == 2.0  # copied into the captured tensors
    assert replay.graph is not None
    third = replay.adopt(*batch(3, 5.0))
    assert third[1].x is not first[1].x and replay.graph is None and replay.calls == 0


def _simulated_graphs_on_the_cpu(monkeypatch):
    """graph=True on the CPU with torch.cuda's calls stubbed: the capture records the iteration closure
    without running it, and each replay calls that closure again, on the tensors it was captured with,
    as a CUDA graph replays its kernels on the captured memory."""
    from lst_fast.walk import call_plan, graph_replay

    _StubCuda(monkeypatch)

    class RecordedGraph:
        def __init__(self, fn):
            self.fn = fn

        def replay(self):
            self.fn()

    monkeypatch.setattr(graph_replay, "capture", lambda fn, stream: RecordedGraph(fn))
    monkeypatch.setattr(call_plan, "_graph_replay", lambda device: graph_replay.GraphReplay(device))


@pytest.mark.parametrize("give_label", [True, False])
def test_graph_batches_of_one_shape_keep_inputs_and_own_their_results(monkeypatch, give_label):
    """Several equal batches through one capture: the caller's targets and labels stay untouched, and every
    batch's outputs (images, labels, confidences, steps, traces) are its own, equal to the eager run's."""
    model = tiny_cnn(scale=12)
    x, y = images(12, seed=21)
    y = y.contiguous()  # fp32, contiguous, full size: the walk's target could be the caller's y itself
    label = model(x).argmax(1) if give_label else None
    y_before, label_before = y.clone(), None if label is None else label.clone()
    settings = dict(iterations=9, step_size=0.05, threshold=0.2, batch_size=4, record_every=3)
    eager = lst_fast.traverse(model, x, y, label=label, generator=torch.Generator().manual_seed(3), **settings)
    _simulated_graphs_on_the_cpu(monkeypatch)
    graphed = lst_fast.traverse(
        model, x, y, label=label, generator=torch.Generator().manual_seed(3), graph=True, **settings
    )
    assert torch.equal(y, y_before)
    if label is not None:
        assert torch.equal(label, label_before)
    assert (eager.accepted_steps > 0).any()
    for name, value in eager.tensors().items():
        assert torch.equal(getattr(graphed, name), value), name


def test_bf16_walk_back_does_not_autotune_cudnn_for_each_subset_size():
    """The end check's walk-back forwards subsets of changing size; cuDNN autotuning (on for the walk in
    bf16 mode) is off for those forwards and on again afterwards."""
    from lst_fast.walk import observers as walk_observers
    from lst_fast.walk import runtime
    from lst_fast.walk import state as walk_state

    flags = []

    def report(images):
        flags.append(torch.backends.cudnn.benchmark)
        first = 10 * (1 - images.flatten(1).mean(1))  # confident at 0, not at 1
        return torch.stack([first, torch.zeros_like(first)], 1)

    n = 4
    state = walk_state.WalkState(
        x=torch.zeros(n, 3),
        grad=torch.zeros(n, 3),
        adv=torch.zeros(n, 3),
        confidence=torch.ones(n, dtype=torch.float64),
        accepted_steps=torch.zeros(n, dtype=torch.long),
    )
    label = torch.zeros(n, dtype=torch.long)
    with runtime.cudnn_autotune():
        check = walk_observers.EndCheck(report, state, label, torch.ones(n, dtype=torch.float64), 0.2, iterations=4)
        state.x[:2] = 1.0  # two samples end where the model as given no longer holds the class
        state.accepted_steps += 4
        x, steps, _ = check.finish(state)
        assert torch.backends.cudnn.benchmark
    assert len(flags) == 2 and not any(flags), flags
    assert torch.equal(x, torch.zeros(n, 3)) and steps.tolist() == [0, 0, 4, 4]


def _walk_state(n, shape=(3,)):
    from lst_fast.walk import state as walk_state

    return walk_state.WalkState(
        x=torch.zeros(n, *shape),
        grad=torch.zeros(n, *shape),
        adv=torch.zeros(n, *shape),
        confidence=torch.ones(n, dtype=torch.float64),
        accepted_steps=torch.zeros(n, dtype=torch.long),
    )


@pytest.mark.parametrize("iterations, kept", [(400, 20), (45, 15), (20, 20), (5, 5), (1, 1)])
def test_end_check_keeps_at_most_kept_iterates(iterations, kept):
    """The bf16 end check keeps the start and evenly spaced iterates before the last, never more than
    KEPT_ITERATES of them (the batch-size estimate counts their memory)."""
    from lst_fast.walk import observers as walk_observers

    state = _walk_state(2)
    check = walk_observers.EndCheck(
        lambda x: x, state, torch.zeros(2, dtype=torch.long), state.confidence, 0.2, iterations
    )
    for i in range(1, iterations + 1):
        check.stepped(i, state)
    assert len(check.kept) == kept <= walk_observers.KEPT_ITERATES


def test_each_precision_walks_reports_and_ends_with_its_own_models():
    """fp32: the model itself walks and reports and the walk's last iterate is returned (copied out only
    when a graph replay owns it); bf16: a bf16 copy walks, the model as given reports, the end check ends."""
    from lst_fast.walk import observers as walk_observers
    from lst_fast.walk import precision
    from lst_fast.walk import state as walk_state
    from lst_fast.walk.settings import LSTSettings

    model = tiny_cnn(scale=12)
    x, _ = images(4, seed=23)
    exact = precision.for_call(model, LSTSettings(), x, None)
    assert isinstance(exact, precision.ExactPrecision) and exact.walk_forward is exact.report_forward
    logits, reported = exact.source_logits(x)
    assert reported is logits and torch.equal(logits, model(x).detach())
    state = _walk_state(4, (1, 8, 8))
    fixed = walk_state.WalkConstants(target=x, label=logits.argmax(1), p0=torch.ones(4, dtype=torch.float64))
    for copy_out in (False, True):
        end = exact.end(state, fixed, reported, LSTSettings(), copy_out=copy_out)
        assert isinstance(end, walk_observers.FinalIterate)
        assert (end.finish(state)[0] is state.x) != copy_out and torch.equal(end.finish(state)[0], state.x)

    bf16 = precision.for_call(model, LSTSettings(precision="bf16"), x, None)
    assert isinstance(bf16, precision.Bf16Precision) and bf16.model_copy["copy"]
    logits, reported = bf16.source_logits(x)
    assert torch.equal(reported, model(x).detach()) and not torch.equal(logits, reported)
    end = bf16.end(state, fixed, reported, LSTSettings(precision="bf16"), copy_out=False)
    assert isinstance(end, walk_observers.EndCheck) and end.report is bf16.report_forward
    assert torch.equal(end.p0, class_probability(reported, fixed.label))


def _precision_flags():
    from lst_fast.walk import runtime

    return [getattr(owner, name) for owner, name, _ in runtime._tf32_switches(torch.backends)]


def test_backend_flags_are_restored_after_each_mode():
    flags = lambda: (torch.backends.cudnn.benchmark, *_precision_flags())  # noqa: E731
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


def test_folding_is_undone_exactly():
    model = Residual().eval()
    modules = dict(model.named_modules())
    before = copy.deepcopy(model.state_dict())
    replaced = prepared_model.fold_batchnorm(model)
    assert isinstance(model.bn1, nn.Identity) and type(model.conv1) is nn.Conv2d
    prepared_model.restore_submodules(model, replaced)
    assert dict(model.named_modules()) == modules  # the very same module objects
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_compile_model_compiles_once_across_calls(monkeypatch):
    """Repeated calls with compile_model=True reuse the compiled code (no new Dynamo graph), BatchNorm
    folded or not. The graphs are counted with torch.compile's eager backend, which traces as inductor
    does and compiles nothing."""
    import functools

    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    for make in (lambda: tiny_cnn(scale=12), lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 5))):
        model = make()
        x, y = images(4, seed=22)
        graphs = []
        for _ in range(3):
            r = lst_fast.traverse(model, x, y, iterations=2, precision="bf16", compile_model=True, batch_size=4)
            graphs.append(counters["stats"]["unique_graphs"])
        assert graphs[0] >= 1 and graphs[2] == graphs[0], graphs
    assert r.config["model_copy"]["compiled"]
    torch._dynamo.reset()


@pytest.mark.parametrize("record_every", [0, 2])
def test_compile_model_compiles_one_graph_per_call(monkeypatch, record_every):
    """compile_model=True compiles the walk's gradient forward alone: the no-grad forwards (the first
    logits, the recorder's) run the same copy uncompiled, since Dynamo would compile a second graph for
    grad mode off. Counted with the eager backend, as above."""
    import functools

    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    x, y = images(4, seed=23)
    r = lst_fast.traverse(
        tiny_cnn(scale=12),
        x,
        y,
        iterations=4,
        precision="bf16",
        compile_model=True,
        batch_size=4,
        record_every=record_every,
    )
    assert r.config["model_copy"]["compiled"]
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    torch._dynamo.reset()


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


class _RecordsPrecision(nn.Module):
    """A model that notes the TF32 switches it runs under."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x):
        self.seen.append(_precision_flags())
        return self.net(x)


@pytest.mark.skipif(not hasattr(torch.backends, "fp32_precision"), reason="torch without fp32_precision settings")
def test_exact_mode_overrides_a_global_tf32_setting_and_restores_it():
    """A user's `torch.backends.fp32_precision = "tf32"` is inherited by every backend; exact mode turns each
    one to "ieee" through the new-style settings (never reading the legacy flags, which torch refuses after
    a new-style setting) and puts back what it read."""
    saved = torch.backends.fp32_precision
    torch.backends.fp32_precision = "tf32"
    try:
        before = _precision_flags()
        assert "tf32" in before
        model = _RecordsPrecision(tiny_cnn(scale=12))
        x, y = images(2, seed=20)
        lst_fast.traverse(model, x, y, iterations=2)
        assert model.seen and all(set(seen) == {"ieee"} for seen in model.seen)
        assert _precision_flags() == before
    finally:
        torch.backends.fp32_precision = saved


def test_exact_mode_uses_the_legacy_flags_on_a_torch_without_new_style_settings():
    import types

    from lst_fast.walk import runtime

    legacy = types.SimpleNamespace(
        cuda=types.SimpleNamespace(matmul=types.SimpleNamespace(allow_tf32=True)),
        cudnn=types.SimpleNamespace(allow_tf32=True),
    )
    with runtime.full_fp32_matmuls(legacy):
        assert legacy.cuda.matmul.allow_tf32 is False and legacy.cudnn.allow_tf32 is False
    assert legacy.cuda.matmul.allow_tf32 is True and legacy.cudnn.allow_tf32 is True
    mixed = types.SimpleNamespace(  # new-style cuBLAS setting, legacy cuDNN flag
        cuda=types.SimpleNamespace(matmul=types.SimpleNamespace(fp32_precision="tf32")),
        cudnn=types.SimpleNamespace(allow_tf32=True),
    )
    with runtime.full_fp32_matmuls(mixed):
        assert mixed.cuda.matmul.fp32_precision == "ieee" and mixed.cudnn.allow_tf32 is False
    assert mixed.cuda.matmul.fp32_precision == "tf32" and mixed.cudnn.allow_tf32 is True


class _FakeMemory:
    """GPU memory readings for the batch rule: `per_image` bytes per probe image plus `fixed`, and on the
    first call of a shape (cuDNN autotuning) a workspace of `tuning` bytes more, unless already tuned."""

    def __init__(self, per_image, fixed, tuning, free, tuned=()):
        self.per_image, self.fixed, self.tuning, self.free_bytes = per_image, fixed, tuning, free
        self.tuned, self.allocated, self.max = set(tuned), 1000, 1000

    def run_probe(self, k):
        extra = 0 if k in self.tuned else self.tuning
        self.tuned.add(k)
        self.max = max(self.max, self.allocated + self.fixed + self.per_image * k + extra)

    def settle(self):
        self.max = self.allocated
        return self.allocated

    def peak(self):
        return self.max

    def free(self):
        return self.free_bytes


def test_cuda_batch_rule_adds_what_the_walk_holds_per_image():
    mib = 2**20
    memory = _FakeMemory(per_image=10 * mib, fixed=50 * mib, tuning=0, free=10_000 * mib)
    # (0.7 * 10000 MiB - 50 MiB) / (10 + 10) MiB = 347, down to a multiple of 8
    assert batching.measure_cuda_batch_size(memory.run_probe, 100_000, memory, walk_bytes=10 * mib) == 344


@pytest.mark.parametrize(
    "settings, images_held",
    [
        # x, grad, adv, the candidate and its gradient: 5 images of fp32 per image in the batch
        (dict(), 5),
        # + the end check: the start, the iterates at 2, 4, ..., 38 (every ceil(40 / 20) = 2) and finish's copy
        (dict(precision="bf16"), 5 + 21),
        # + the graph replay's own target, x, grad and adv
        (dict(graph=True), 5 + 4),
        # + recorded trace images on the walk's device: iterations 0, 10, 20, 30, 40
        (dict(record_every=10), 5 + 5),
        (dict(record_every=10, record_device="meta"), 5),  # recorded elsewhere: not on the walk's device
        (dict(precision="bf16", graph=True, record_every=10), 5 + 21 + 4 + 5),
    ],
)
def test_automatic_batch_size_counts_what_the_walk_holds(monkeypatch, settings, images_held):
    """The per-image bytes the automatic size adds to one forward+backward, against a count by hand of
    every image-sized tensor a 40-iteration walk keeps at once, term by term: leaving one out fails."""
    from lst_fast.walk import traversal

    class Sized(Exception):  # stops the call once the size is asked for: the walk itself is not needed
        pass

    def spy(run_probe, n, device, walk_bytes=0):
        raise Sized(walk_bytes)

    monkeypatch.setattr(traversal.batching, "automatic_batch_size", spy)
    x, y = images(6, c=3, seed=31)
    with pytest.raises(Sized) as sized:
        lst_fast.traverse(tiny_cnn(channels=3, scale=12), x, y, iterations=40, **settings)
    seen = list(sized.value.args)
    assert seen == [images_held * 3 * 8 * 8 * 4]  # one 3x8x8 fp32 image is 768 bytes


@pytest.mark.parametrize("iterations", [0, 1, 2, 19, 20, 21, 39, 40, 41, 400, 401])
def test_end_check_and_recorder_hold_as_many_copies_as_counted(iterations):
    """EndCheck.copies_held and Recorder.records (what the batch size counts) against the copies the
    end check and the recorder really keep over a walk."""
    from lst_fast.walk import observers as walk_observers
    from lst_fast.walk import state as walk_state

    x = torch.rand(2, 3)
    state = walk_state.WalkState(
        x, torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2), torch.zeros(2, dtype=torch.long)
    )
    label, p0 = torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.float64)
    check = walk_observers.EndCheck(lambda images: torch.zeros(2, 2), state, label, p0, 0.5, iterations)
    recorder = walk_observers.Recorder(7, iterations, lambda images: torch.zeros(2, 2), label, x.device, state)
    for i in range(1, iterations + 1):
        check.stepped(i, state)
        recorder.stepped(i, state)
    assert walk_observers.EndCheck.copies_held(iterations) == len(check.kept) + 1  # + finish's copy of x
    assert walk_observers.Recorder.records(7, iterations) == len(recorder.images)


def test_cuda_batch_rule_does_not_depend_on_autotuning():
    mib = 2**20
    sizes = []
    for tuned in ((), (4, 8)):
        memory = _FakeMemory(per_image=10 * mib, fixed=50 * mib, tuning=500 * mib, free=10_000 * mib, tuned=tuned)
        sizes.append(batching.measure_cuda_batch_size(memory.run_probe, 100_000, memory))
    assert sizes[0] == sizes[1] == 688  # (0.7 * 10000 MiB - 50 MiB) / 10 MiB = 695, down to a multiple of 8
    memory = _FakeMemory(per_image=10 * mib, fixed=0, tuning=0, free=10_000 * mib)
    assert batching.measure_cuda_batch_size(memory.run_probe, 300, memory) == 300
