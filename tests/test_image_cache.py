"""cached_images: the chosen images are fetched once and served unchanged; the evaluation reads its pool
through it, so each pool image is fetched once after the pool scan, with the same tables as without."""

from __future__ import annotations

import collections

import pytest
import torch

from lst_fast.data.image_cache import cached_images
from lst_fast.data.image_set import ImageSet
from lst_fast.data.sources import open_image_set
from lst_fast.evaluation import runner
from lst_fast.evaluation.config import EvalConfig
from lst_fast.run_environment import QUIET_ENVIRONMENT


def counting_set(images: torch.Tensor, labels: torch.Tensor, counts: collections.Counter) -> ImageSet:
    def fetch(index: torch.Tensor) -> torch.Tensor:
        counts.update(index.tolist())
        return images[index].clone()

    # In memory, as it is: read in this process (a decoding worker would count in its own copy).
    return ImageSet(labels, fetch, "counted", in_memory=True)


def test_cached_images_serve_the_fetched_images_once_each():
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.rand(12, 1, 4, 4, generator=gen), torch.arange(12) % 3
    counts: collections.Counter = collections.Counter()
    cached = cached_images(counting_set(images, labels, counts), torch.tensor([9, 2, 5, 2]))
    assert torch.equal(cached.labels, labels) and cached.name == "counted" and len(cached) == 12
    for index in ([2, 9], [9, 9, 5], [5, 2, 9], [2], [9, 1, 5, 1]):  # repeats, a mix with uncached ones
        got = cached.get(torch.tensor(index))
        assert torch.equal(got, images[index]), index
    assert counts[2] == counts[9] == counts[5] == 1  # each chosen image fetched once
    assert counts[1] == 2  # an image outside the choice is fetched every time
    served = cached.get(torch.tensor([5]))
    served.fill_(7.0)  # a caller changing what it got does not change the cache
    assert torch.equal(cached.get(torch.tensor([5])), images[[5]])
    assert cached.get(torch.tensor([], dtype=torch.long)).shape[0] == 0


def test_cached_images_reject_bad_arguments():
    data = counting_set(torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.long), collections.Counter())
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\)"):
        cached_images(data, torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="1-d integer tensor"):
        cached_images(data, torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="data must be an ImageSet"):
        cached_images(torch.rand(4, 1, 2, 2), torch.tensor([0]))  # type: ignore[arg-type]


def test_evaluation_reads_each_pool_image_once_and_its_tables_do_not_change(tmp_path, monkeypatch):
    sample = open_image_set("fashion-mnist-sample")
    images = sample.get(torch.arange(len(sample)))
    counts: collections.Counter = collections.Counter()
    monkeypatch.setattr(runner, "open_image_set", lambda *a, **k: counting_set(images, sample.labels, counts))
    # triangle_n=2 (6 points a triangle, not 66): the triangles read the pool images as every stage does, and
    # the two runs' tables still hold triangle values to compare
    cfg = EvalConfig(data="fashion-mnist-sample", num_samples=12, rounds=3, iterations=4, chunk_size=5, triangle_n=2)
    cached_tables = runner.run_evaluation(cfg, tmp_path / "cached", env=QUIET_ENVIRONMENT)
    read_twice = sorted(i for i, n in counts.items() if n == 2)
    assert len(read_twice) == cfg.num_samples  # the pool scan reads each image, then each pool image once more
    assert set(counts.values()) == {1, 2} and len(counts) == len(sample)

    monkeypatch.setattr(runner, "cached_images", lambda data, indices: data)  # the evaluation without the cache
    counts.clear()
    plain_tables = runner.run_evaluation(cfg, tmp_path / "plain", env=QUIET_ENVIRONMENT)
    assert max(counts.values()) > 2  # without it the stages read the pool images again and again
    assert cached_tables == plain_tables
