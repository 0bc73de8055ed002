"""Results pinned by content (OUT/provenance.json): the digests of the weights and pixels an evaluation ran,
checked by resume, `eval --pool`, compare, the leaderboard's rereads and the site (its checks and its
cache), each refusal one line naming what changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lst_fast.evaluation.provenance import state_dict_sha256
from conftest import cli_exit_code, tiny_cnn

FAST = ["--iterations", "2", "--chunk-size", "4", "--no-progress"]


def _one_error_line(capsys, code) -> str:
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert captured.err.count("\n") == 1 and "internal error" not in captured.err, captured.err
    return captured.err


def _save_weights(name: str, path: Path) -> None:
    from lst_fast.models import load_model

    save_file({k: v.contiguous() for k, v in load_model(name).state_dict().items()}, str(path))


def _sample_files(folder: Path) -> tuple[Path, Path]:
    """The first 40 shipped sample images as a tensor file, and the same images with +-2 noise."""
    from lst_fast.data.fashion_mnist import load_sample

    images, labels = load_sample()
    images, labels = images[:40], labels[:40]
    noise = torch.randint(-2, 3, images.shape, generator=torch.Generator().manual_seed(0))
    noisy = (images.to(torch.int16) + noise).clamp(0, 255).to(torch.uint8)
    save_file({"images": images, "labels": labels}, str(folder / "a.safetensors"))
    save_file({"images": noisy, "labels": labels}, str(folder / "noisy.safetensors"))
    return folder / "a.safetensors", folder / "noisy.safetensors"


def test_the_state_dict_digest_covers_names_dtypes_shapes_and_bytes():
    a, b = tiny_cnn(), tiny_cnn()
    assert state_dict_sha256(a) == state_dict_sha256(b)
    with torch.no_grad():
        b[0].weight[0, 0, 0, 0] += 1e-6
    assert state_dict_sha256(a) != state_dict_sha256(b)
    assert state_dict_sha256(a) != state_dict_sha256(a.double())  # the dtype counts, not only the values


def test_resume_after_the_checkpoint_was_overwritten_is_refused_and_restart_starts_afresh(tmp_path, capsys):
    """Issue case 1: a half-done eval of the cnn weights, the robust weights copied over the file, rerun."""
    weights, out = tmp_path / "w.safetensors", tmp_path / "out"
    _save_weights("cnn", weights)
    args = ["eval", "--model", "fashion_cnn", "--checkpoint", str(weights), "--data", "fashion-mnist-sample"]
    args += ["--num-samples", "8", "--rounds", "2", *FAST, "--out", str(out)]
    assert cli_exit_code(args) == 0
    first = json.loads((out / "provenance.json").read_text())
    assert first["weights"]["of"] == "checkpoint file" and len(first["pixels"]["indices"]) == 8
    (out / "results" / "round01_chunk00001.safetensors").unlink()  # half done
    (out / "tables.json").unlink()
    _save_weights("cnn-robust", weights)
    capsys.readouterr()
    err = _one_error_line(capsys, cli_exit_code(args))
    assert f"weights of fashion_cnn changed since {out} was written" in err and first["weights"]["sha256"][:12] in err
    assert not (out / "results" / "round01_chunk00001.safetensors").exists()  # nothing was computed
    assert cli_exit_code([*args, "--restart"]) == 0
    assert json.loads((out / "provenance.json").read_text())["weights"]["sha256"] != first["weights"]["sha256"]


def test_a_named_model_records_its_state_dict_and_a_chunk_of_other_weights_is_refused(tmp_path):
    from lst_fast.evaluation import EvalConfig, EvaluationStore, run_evaluation
    from lst_fast.evaluation.provenance import read_provenance
    from lst_fast.run_environment import QUIET_ENVIRONMENT

    cfg = EvalConfig(data="fashion-mnist-sample", num_samples=4, rounds=1, iterations=2, chunk_size=4)
    run_evaluation(cfg, tmp_path, env=QUIET_ENVIRONMENT)
    recorded = read_provenance(tmp_path)
    assert recorded is not None and recorded.weights_of == "state_dict"
    store = EvaluationStore(tmp_path)
    chunk = store.read_round(0, 1)
    other = dataclasses_replace(recorded, weights_sha256="0" * 64)
    assert store.has_chunk(0, 0, cfg, chunk["source"], chunk["target"], provenance=recorded)
    with pytest.raises(ValueError, match="other weights or pixels"):
        store.has_chunk(0, 0, cfg, chunk["source"], chunk["target"], provenance=other)


def dataclasses_replace(value, **changes):
    import dataclasses

    return dataclasses.replace(value, **changes)


def test_eval_on_a_pool_reads_the_data_it_is_given_and_checks_its_pixels(tmp_path, capsys):
    """Issue case 3: the pool's data moved (A to B): B is read; the same images with noise are refused."""
    from lst_fast.evaluation.pool import build_pool
    from lst_fast.run_environment import QUIET_ENVIRONMENT

    a, noisy = _sample_files(tmp_path)
    pool, _ = build_pool(["cnn"], f"tensor:{a}", 6, rounds=2, env=QUIET_ENVIRONMENT)
    pool.save(tmp_path / "pool.json")
    moved = tmp_path / "b.safetensors"
    shutil.move(a, moved)
    base = ["eval", "--pool", str(tmp_path / "pool.json"), *FAST]
    assert cli_exit_code([*base, "--data", f"tensor:{moved}", "--out", str(tmp_path / "moved")]) == 0
    assert json.loads((tmp_path / "moved" / "config.json").read_text())["data"] == f"tensor:{moved}"
    recorded = json.loads((tmp_path / "moved" / "provenance.json").read_text())["pixels"]
    assert recorded["sha256"] == pool.data["pixels_sha256"] and recorded["indices"] == pool.indices.tolist()
    capsys.readouterr()
    err = _one_error_line(capsys, cli_exit_code([*base, "--data", f"tensor:{noisy}", "--out", str(tmp_path / "no")]))
    assert "other pixels" in err and not (tmp_path / "no").exists()


def test_compare_does_not_pair_runs_on_other_pixels_or_without_digests(tmp_path):
    """Issue case 4: the same images with +-2 noise, the same sources and targets: unpaired."""
    from lst_fast.evaluation import EvalConfig, run_evaluation
    from lst_fast.run_environment import QUIET_ENVIRONMENT

    a, noisy = _sample_files(tmp_path)
    # evaluations as `eval` writes them, on a 6-point triangle grid: the pairing reads no triangle
    own = EvalConfig(num_samples=6, rounds=2, iterations=2, chunk_size=4, triangle_n=2)
    for name, data in (("a", a), ("a2", a), ("noisy", noisy)):
        run_evaluation(own.replace(data=f"tensor:{data}"), tmp_path / name, env=QUIET_ENVIRONMENT)

    def note(*names):
        out = tmp_path / ("cmp-" + "-".join(names))
        assert cli_exit_code(["compare", *(str(tmp_path / n) for n in names), "--out", str(out)]) == 0
        return json.loads((out / "compare.json").read_text())["shared_pool"]

    assert note("a", "a2")["paired"]
    noisy_note = note("a", "noisy")
    assert not noisy_note["paired"] and "other pixels" in noisy_note["text"]
    (tmp_path / "a2" / "provenance.json").unlink()  # as an earlier lst_fast wrote it
    old = note("a", "a2")
    assert not old["paired"] and "no digest" in old["text"]


def test_the_leaderboard_refuses_a_folder_that_walked_other_pixels_than_its_pool():
    from lst_fast.evaluation.leaderboard import pixel_problems
    from lst_fast.evaluation.pool import build_pool
    from lst_fast.evaluation.provenance import Provenance
    from lst_fast.run_environment import QUIET_ENVIRONMENT

    pool, _ = build_pool(["cnn"], "fashion-mnist-sample", 4, rounds=2, env=QUIET_ENVIRONMENT)
    indices = tuple(pool.indices.tolist())
    same = Provenance("cnn", "1" * 64, "state_dict", pool.data["pixels_sha256"], indices, {})
    assert pixel_problems(same, pool) == [] and pixel_problems(None, pool) == []
    assert "other pixels" in pixel_problems(dataclasses_replace(same, pixels_sha256="2" * 64), pool)[0]
    assert "other images" in pixel_problems(dataclasses_replace(same, pixel_indices=indices[:2]), pool)[0]


def _site_eval(tmp_path: Path, weights: Path, out: Path, seed: str = "0") -> None:
    args = ["eval", "--model", "fashion_cnn", "--checkpoint", str(weights), "--data", "fashion-mnist-sample"]
    assert cli_exit_code([*args, "--num-samples", "4", "--rounds", "2", "--seed", seed, *FAST, "--out", str(out)]) == 0


def test_the_site_refuses_changed_weights_and_keys_its_cache_on_them(tmp_path, capsys):
    """Issue case 2: after the weights file changed, a rebuild never serves the old weights' forwards."""
    from safetensors.torch import load_file

    weights, run, site = tmp_path / "w.safetensors", tmp_path / "run", tmp_path / "site"
    _save_weights("cnn", weights)
    _site_eval(tmp_path, weights, run)
    build = ["site", str(run), "--out", str(site), "--walk-pages", "1", "--no-progress"]
    assert cli_exit_code(build) == 0
    cached = next((site / "cache").glob("*-targets.safetensors"))
    before = load_file(str(cached))["confidence"]
    _save_weights("cnn-robust", weights)
    capsys.readouterr()
    err = _one_error_line(capsys, cli_exit_code(build))
    assert "weights of fashion_cnn changed" in err
    (run / "provenance.json").unlink()  # a folder of an earlier lst_fast: nothing to check, the cache still sees it
    assert cli_exit_code(build) == 0
    assert not torch.equal(load_file(str(cached))["confidence"], before)  # recomputed with the new weights


def test_the_site_refuses_a_chunk_copied_from_another_run(tmp_path, capsys):
    """Issue case 6: round 0's chunk of another run (other sources) in a finished folder."""
    weights = tmp_path / "w.safetensors"
    _save_weights("cnn", weights)
    _site_eval(tmp_path, weights, tmp_path / "run")
    _site_eval(tmp_path, weights, tmp_path / "other", seed="5")
    name = "results/round00_chunk00000.safetensors"
    shutil.copyfile(tmp_path / "other" / name, tmp_path / "run" / name)
    capsys.readouterr()
    err = _one_error_line(
        capsys, cli_exit_code(["site", str(tmp_path / "run"), "--out", str(tmp_path / "site"), "--no-progress"])
    )
    assert "round00_chunk00000.safetensors does not belong to this evaluation" in err
