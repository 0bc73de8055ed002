"""The shared pool (lst_fast.evaluation.pool) and `eval --pool`: only qualifying images enter it, the scan
stops when it is full, the same pool comes out whatever the workers, the models check in turn, a pool of
another data set is refused, and runs on one pool share their sources and targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lst_fast.data.sources import open_image_set
from lst_fast.evaluation import EvalConfig, run_evaluation
from lst_fast.evaluation.pool import PoolMember, build_pool, load_pool, scan_order, select_pool
from lst_fast.evaluation.runner import pool_config
from lst_fast.models import resolve_model
from lst_fast.run_environment import QUIET_ENVIRONMENT, RunEnvironment

# triangle_n=2 (6 points a triangle, not 66): these tests read pools, pairs and pairing, no triangle value
SMALL = dict(data="fashion-mnist-sample", rounds=2, iterations=3, chunk_size=8, triangle_n=2)


def _relabelled(tmp_path: Path, flipped: torch.Tensor, name: str = "relabelled") -> str:
    """The shipped sample as a tensor file, with the labels of `flipped` changed (so every model
    misclassifies those images)."""
    from safetensors.torch import save_file

    from lst_fast.data.fashion_mnist import load_sample

    images, labels = load_sample()
    labels = labels.clone()
    labels[flipped] = (labels[flipped] + 1) % 10
    path = tmp_path / f"{name}.safetensors"
    save_file({"images": images, "labels": labels}, str(path))
    return f"tensor:{path}"


def _planted(tmp_path: Path):
    """The sample with misclassified images planted among the first scanned (seed 0), the shipped CNN, and
    a confidence bar that some correctly classified images fail: (order, flipped, data, cnn, correct, bar,
    good), good marking the images that qualify."""
    order = scan_order(100, 0)
    flipped = order[:40:3]
    data = open_image_set(_relabelled(tmp_path, flipped))
    cnn = resolve_model("cnn").classifier()
    with torch.no_grad():
        logits = cnn(data.get(torch.arange(100)))
    p = torch.softmax(logits.double(), 1).gather(1, data.labels[:, None]).squeeze(1)
    correct = logits.argmax(1) == data.labels
    bar = float(p[correct].quantile(0.3))
    return order, flipped, data, cnn, correct, bar, correct & (p > bar)


def test_misclassified_and_unconfident_images_never_enter_the_pool(tmp_path):
    order, flipped, data, cnn, correct, bar, good = _planted(tmp_path)
    indices, confidence, stats = select_pool(
        [PoolMember("cnn", cnn, data)], 30, bar, seed=0, env=RunEnvironment(batch_size=16, progress=False)
    )
    assert not correct[flipped].any()  # the plant worked: every flipped image is misclassified
    assert len(indices) == 30 and good[indices].all()
    assert (confidence["cnn"] > bar).all()
    rejected = order[: stats.scanned][~good[order[: stats.scanned]]]
    assert (~correct[rejected]).sum() >= 5 and (correct[rejected]).sum() >= 3  # both kinds were met and refused
    # Exactly the first 30 qualifying images of the seeded order, in that order.
    assert indices.tolist() == order[good[order]][:30].tolist()


def test_the_scan_stops_when_the_pool_is_full():
    pool, stats = build_pool(
        ["cnn"], "fashion-mnist-sample", 10, seed=1, env=RunEnvironment(batch_size=8, progress=False)
    )
    assert len(pool) == 10 and stats.filled
    assert 10 <= stats.scanned < 100 and stats.decoded < 100 and stats.forwards["cnn"] < 100
    assert stats.forwards["cnn"] == stats.decoded == 8 * -(-stats.scanned // 8)  # whole batches up to the stop
    assert pool.scan["scanned"] == stats.scanned
    # Asking more than qualify scans everything and says so.
    pool, stats = build_pool(["cnn"], "fashion-mnist-sample", 1000, env=QUIET_ENVIRONMENT)
    assert stats.scanned == 100 and not stats.filled and len(pool) < 100


def test_the_same_pool_for_any_workers_and_batch_size_and_on_every_run():
    args = (["cnn", "vit"], "fashion-mnist-sample", 20, 0.6, 3)
    first, _ = build_pool(*args, env=RunEnvironment(workers=0, progress=False))
    again, _ = build_pool(*args, env=RunEnvironment(workers=0, progress=False))
    workers, stats = build_pool(*args, env=RunEnvironment(workers=2, batch_size=7, progress=False))
    assert stats.workers == 2
    assert first.indices.tolist() == again.indices.tolist() == workers.indices.tolist()
    assert first.digest == again.digest == workers.digest
    other, _ = build_pool(["cnn", "vit"], "fashion-mnist-sample", 20, 0.6, 4, env=QUIET_ENVIRONMENT)
    assert other.digest != first.digest  # another seed, another draw


class _Recording(nn.Module):
    """A model that keeps every batch it is shown."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module, self.seen = module, []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.module(x)


def test_each_model_sees_only_the_images_the_models_before_it_accepted():
    data = open_image_set("fashion-mnist-sample")
    first, second = _Recording(resolve_model("cnn-robust").classifier()), _Recording(resolve_model("vit").classifier())
    members = [PoolMember("cnn-robust", first, data), PoolMember("vit", second, data)]
    _, _, stats = select_pool(members, 100, 0.9, seed=0, env=RunEnvironment(batch_size=16, progress=False))
    shown = torch.cat(first.seen)
    with torch.no_grad():
        logits = first.module(shown)
    labels = data.labels[scan_order(100, 0)[: len(shown)]]
    p = torch.softmax(logits.double(), 1).gather(1, labels[:, None]).squeeze(1)
    accepted = (logits.argmax(1) == labels) & (p > 0.9)
    assert 0 < int(accepted.sum()) < len(shown)  # the first model rejected some
    assert torch.equal(torch.cat(second.seen), shown[accepted])
    assert stats.forwards == {"cnn-robust": len(shown), "vit": int(accepted.sum())}


def test_a_pool_file_round_trips_and_refuses_another_data_set(tmp_path):
    pool, _ = build_pool(["cnn"], "fashion-mnist-sample", 12, 0.6, env=QUIET_ENVIRONMENT)
    path = pool.save(tmp_path / "pool.json")
    loaded = load_pool(path)
    assert loaded.digest == pool.digest and loaded.indices.tolist() == pool.indices.tolist()
    record = json.loads(path.read_text())
    assert record["data"]["size"] == 100 and len(record["data"]["labels_sha256"]) == 64
    assert record["models"][0]["model"] == "cnn" and record["settings"]["min_confidence"] == 0.6
    assert record["digest"] == pool.digest and len(record["confidence"]["cnn"]) == 12
    loaded.check_data(open_image_set("fashion-mnist-sample"), "fashion-mnist-sample")
    with pytest.raises(ValueError, match="another data set .*: data fashion-mnist-sample vs tensor;"):
        loaded.check_data(open_image_set(_relabelled(tmp_path, torch.tensor([], dtype=torch.long))), "tensor:x")
    on_file, _ = build_pool(
        ["cnn"], spec := _relabelled(tmp_path, torch.tensor([], dtype=torch.long), "a"), 12, env=QUIET_ENVIRONMENT
    )
    other = _relabelled(tmp_path, torch.tensor([5]), "b")
    with pytest.raises(ValueError, match="another data set") as error:
        on_file.check_data(open_image_set(other), other)
    assert "\n" not in str(error.value) and "its labels differ" in str(error.value)
    on_file.check_data(open_image_set(spec), spec)
    record["indices"][0] = record["indices"][1]
    (tmp_path / "changed.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="malformed pool file .indices must be distinct"):
        load_pool(tmp_path / "changed.json")
    record = json.loads(path.read_text())
    record["indices"][0], record["indices"][1] = record["indices"][1], record["indices"][0]  # well-formed
    (tmp_path / "changed.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="changed since it was written"):
        load_pool(tmp_path / "changed.json")


def test_the_cli_refuses_a_pool_of_another_data_set_in_one_line(tmp_path, capsys):
    from lst_fast.cli import main

    pool, _ = build_pool(["cnn"], "fashion-mnist-sample", 12, rounds=2, env=QUIET_ENVIRONMENT)
    pool.save(tmp_path / "pool.json")
    other = _relabelled(tmp_path, torch.tensor([0, 1]))
    code = main(["eval", "--pool", str(tmp_path / "pool.json"), "--data", other, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "data tensor:" in err and "(the pool: fashion-mnist-sample)" in err
    assert not (tmp_path / "o" / "config.json").exists()
    args = ["eval", "--pool", str(tmp_path / "pool.json"), "--data", "fashion-mnist-sample", "--model", "vit"]
    args += ["--rounds", "2", "--iterations", "2", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"pool {tmp_path / 'pool.json'}: 12 images of fashion-mnist-sample made by cnn" in out
    assert "vit: " in out and " of the pool's 12 images classified correctly; evaluated on those" in out
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["pool"] == pool.digest and config["num_samples"] == 12 and config["min_confidence"] is None


def test_runs_on_one_pool_share_sources_and_targets_and_record_its_digest(tmp_path, capsys):
    pool, _ = build_pool(["cnn"], "fashion-mnist-sample", 16, 0.9, rounds=2, env=QUIET_ENVIRONMENT)
    runs = {}
    for model in ("cnn", "cnn-robust"):  # cnn made the pool; cnn-robust did not
        cfg = pool_config(EvalConfig(model=model, **SMALL), pool)
        run_evaluation(cfg, tmp_path / model, env=QUIET_ENVIRONMENT, pool=pool)
        assert json.loads((tmp_path / model / "config.json").read_text())["pool"] == pool.digest
        runs[model] = [_pairs(tmp_path / model, r) for r in range(2)]
    said = capsys.readouterr().out
    assert "cnn: 16 of the pool's 16 images" in said
    kept = len(runs["cnn-robust"][0])
    assert f"cnn-robust: {kept} of the pool's 16 images classified correctly with confidence above 0.9" in said
    assert 2 <= kept < 16  # the later model is evaluated on the part of the pool it classifies correctly
    for r in range(2):
        assert set(runs["cnn-robust"][r]) <= set(runs["cnn"][r])  # the pool's pairs, restricted to its sources
        assert [s for s, _ in runs["cnn"][r]] == pool.indices.tolist()
    with pytest.raises(ValueError, match="pool_config"):
        run_evaluation(EvalConfig(**SMALL), tmp_path / "x", env=QUIET_ENVIRONMENT, pool=pool)


def load_pool_sources(folder: Path) -> set:
    return {s for s, _ in _pairs(folder, 0)}


def _pairs(folder: Path, round_: int):
    from safetensors.torch import load_file

    chunks = sorted((folder / "results").glob(f"round{round_:02d}_chunk*.safetensors"))
    parts = [load_file(str(p)) for p in chunks]
    sources, targets = (torch.cat([p[k] for p in parts]).tolist() for k in ("source", "target"))
    return list(zip(sources, targets, strict=True))


def test_compare_says_whether_runs_share_a_pool(tmp_path):
    from lst_fast.evaluation import write_comparison

    pool, _ = build_pool(["cnn", "vit"], "fashion-mnist-sample", 8, rounds=2, env=QUIET_ENVIRONMENT)
    for model in ("cnn", "vit"):
        run_evaluation(
            pool_config(EvalConfig(model=model, **SMALL), pool), tmp_path / model, env=QUIET_ENVIRONMENT, pool=pool
        )
    run_evaluation(EvalConfig(model="cnn", num_samples=8, **SMALL), tmp_path / "own", env=QUIET_ENVIRONMENT)
    write_comparison([str(tmp_path / "cnn"), str(tmp_path / "vit")], tmp_path / "paired")
    note = json.loads((tmp_path / "paired" / "compare.json").read_text())["shared_pool"]
    assert note["paired"] and note["pool"] == pool.digest
    assert note["shared_sources"] == len(load_pool_sources(tmp_path / "cnn") & load_pool_sources(tmp_path / "vit"))
    assert "Paired: the result files show the same" in (tmp_path / "paired" / "compare.md").read_text()
    write_comparison([str(tmp_path / "cnn"), str(tmp_path / "own")], tmp_path / "unpaired", labels=["a", "b"])
    note = json.loads((tmp_path / "unpaired" / "compare.json").read_text())["shared_pool"]
    assert not note["paired"] and "comparison is unpaired" in note["text"]
    assert "other targets than `a`'s: `b`" in note["text"] or "share no source" in note["text"]


def test_an_evaluations_own_pool_holds_only_qualifying_images_and_stops_when_full(tmp_path):
    """`lst-fast eval` without --pool (runner.own_pool_indices): the same rule and the same early stop."""
    from lst_fast.evaluation.runner import own_pool_indices as own_pool

    order, flipped, data, cnn, correct, bar, good = _planted(tmp_path)
    seen = []

    def counting(images):
        seen.append(images.shape[0])
        return cnn(images)

    cfg = EvalConfig(data="fashion-mnist-sample", num_samples=12, min_confidence=bar, seed=0)
    with torch.no_grad():
        pool = own_pool(counting, data, cfg, RunEnvironment(batch_size=8))
    assert not correct[flipped].any()
    assert len(pool) == 12 and good[pool].all()
    assert pool.tolist() == sorted(order[good[order]][:12].tolist())  # the first 12 that qualify, in order
    assert sum(seen) < 100 and sum(seen) == 8 * len(seen)  # it stopped at the batch that filled it
