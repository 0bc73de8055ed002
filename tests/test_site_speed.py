"""The site's speedups change no output: the parallel image writer writes the bytes the serial write_image
writes, the walk rows read column by column equal the rows read walk by walk, and the decoded copy serves
the images the data set decodes, each decoded once."""

from __future__ import annotations

import collections
import io

import pytest
import torch
from PIL import Image

from lst_fast.data.image_set import ImageSet
from lst_fast.errors import EnvironmentFault
from lst_fast.website.encoding import ImageWriter
from lst_fast.website.images import to_pixels, write_image
from lst_fast.website.walks import WalkTable, walk_records


def _images(n: int, channels: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(n, channels, 4, 4, generator=g), size=(size, size))
    return (smooth + 0.05 * torch.randn(n, channels, size, size, generator=g)).clamp(-0.1, 1.1)  # some clipped


def _serial_bytes(image: torch.Tensor, thumbnail: int) -> bytes:
    """An image's file as the site wrote it before, one image at a time (the reference)."""
    pixels = image.detach().float().cpu().clamp(0, 1).mul(255).round().byte()
    if pixels.shape[0] == 1:
        picture = Image.fromarray(pixels[0].numpy(), mode="L")
    else:
        picture = Image.fromarray(pixels[:3].permute(1, 2, 0).contiguous().numpy(), mode="RGB")
    buffer = io.BytesIO()
    if thumbnail and max(image.shape[-2:]) > thumbnail:
        picture.thumbnail((thumbnail, thumbnail), Image.Resampling.LANCZOS)
        picture.save(buffer, format="JPEG", quality=90)
    else:
        picture.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


@pytest.mark.parametrize("channels, thumbnail", [(3, 16), (3, 0), (1, 16), (1, 64), (4, 16)])
def test_the_parallel_writer_writes_the_files_the_serial_one_writes(tmp_path, channels, thumbnail):
    images = _images(12, channels, 40)  # 40 px: JPEG thumbnails of 16 px, or PNGs (thumbnail 0 or 64)
    for k, image in enumerate(images):
        write_image(image, tmp_path / "serial" / f"{k}.x", thumbnail)
    with ImageWriter(thumbnail, workers=3) as writer:
        for k, image in enumerate(images[:5]):  # one at a time, and the rest as one batch
            writer.write(image, tmp_path / "parallel" / f"{k}.x")
        writer.write_batch(images[5:], [tmp_path / "parallel" / f"{k}.x" for k in range(5, 12)])
        writer.write(images[0], tmp_path / "parallel" / "full.x", 0)  # a size of its own: a PNG
    for k in range(len(images)):
        reference = _serial_bytes(images[k], thumbnail)
        assert (tmp_path / "parallel" / f"{k}.x").read_bytes() == reference
        assert (tmp_path / "serial" / f"{k}.x").read_bytes() == reference
    assert (tmp_path / "parallel" / "full.x").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "serial" / "0.x").read_bytes()[:2] == (b"\xff\xd8" if thumbnail and thumbnail < 40 else b"\x89P")


def test_8_bit_images_are_written_as_the_same_values_in_0_1_would_be(tmp_path):
    every = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_pixels((every.float() / 255).view(1, 1, 16, 16)), every.view(1, 16, 16))
    frames = (_images(3, 3, 20) * 255).round().clamp(0, 255).to(torch.uint8)  # frames as walk_details keeps them
    with ImageWriter(0, workers=2) as writer:
        writer.write_batch(frames, [tmp_path / f"{k}.png" for k in range(3)])
    for k in range(3):
        assert (tmp_path / f"{k}.png").read_bytes() == _serial_bytes(frames[k].float() / 255, 0)


def test_a_failed_write_of_the_parallel_writer_is_raised(tmp_path):
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(EnvironmentFault, match="cannot write"):
        with ImageWriter(0, workers=2) as writer:
            writer.write(_images(1, 1, 8)[0], tmp_path / "file" / "image.png")


def _old_record(table: WalkTable, classes, target_p: torch.Tensor, i: int) -> dict:
    """The row of walk i as the site read it before, walk by walk (the reference)."""
    r, pos = int(table.round[i]), int(table.position[i])
    return {
        "round": r,
        "position": pos,
        "source": int(table.source[i]),
        "target": int(table.target[i]),
        "source_class": classes[int(table.source_class[i])],
        "target_class": classes[int(table.target_class[i])],
        "p0": float(table.initial_confidence[i]),
        "p": float(table.confidence[i]),
        "rms": float(table.rms[i]),
        "striking": float(table.striking[i]),
        "pt": float(target_p[i]),
        "name": f"{r}-{pos}",
    }


def test_the_walk_rows_read_by_column_equal_the_rows_read_walk_by_walk():
    g = torch.Generator().manual_seed(0)
    n = 9
    table = WalkTable(
        round=torch.arange(n) // 3,
        position=torch.arange(n) % 3,
        source=torch.randint(0, 50, (n,), generator=g),
        target=torch.randint(0, 50, (n,), generator=g),
        source_class=torch.randint(0, 4, (n,), generator=g),
        target_class=torch.randint(0, 4, (n,), generator=g),
        initial_confidence=torch.rand(n, generator=g),
        confidence=torch.cat([torch.rand(n - 1, generator=g), torch.tensor([float("nan")])]),  # a NaN stays NaN
        rms=torch.rand(n, generator=g),
        start_rms=torch.rand(n, generator=g, dtype=torch.float64),
        striking=torch.rand(n, generator=g, dtype=torch.float64),
    )
    classes = ["a", "b", "c", "d"]
    target_p = torch.rand(n, generator=g, dtype=torch.float64)
    rows = walk_records(table, classes, target_p)
    old = [_old_record(table, classes, target_p, i) for i in range(n)]
    assert [list(r) for r in rows] == [list(o) for o in old]  # the same keys in the same order
    for new, before in zip(rows, old, strict=True):
        assert repr(new) == repr(before)  # the same values and types (repr: NaN == NaN, 0.1 != 0.1f)


def test_the_decoded_copy_warmed_on_threads_serves_each_image_decoded_once():
    """What the site does with the walked images of image files: the scope's copy decodes them up front on
    several threads (each once), then serves them and decodes only what it does not hold."""
    from lst_fast.data.decoded import DecodedImageSet, DecodeScope

    images, labels = torch.rand(10, 3, 6, 6), torch.arange(10) % 3
    counts: collections.Counter = collections.Counter()

    def fetch(index: torch.Tensor) -> torch.Tensor:
        counts.update(index.tolist())
        return images[index].clone()

    data = ImageSet(labels, fetch, "counted", class_names=["x", "y", "z"])
    held = DecodedImageSet(data, DecodeScope(), "counted")
    held.warm(torch.tensor([7, 2, 2, 5, 0, 9, 3]), workers=3, batch=2)
    assert counts == collections.Counter({0: 1, 2: 1, 3: 1, 5: 1, 7: 1, 9: 1})
    for index in ([2, 7, 2], [9], [0, 1, 5, 8], []):  # held, and some (1, 8) not held: read from the data set
        assert torch.equal(held.get(torch.tensor(index, dtype=torch.long)), images[index])
    assert counts[2] == 1 and counts[1] == 1 and counts[8] == 1
    served = held.get(torch.tensor([3]))
    served.zero_()  # a caller changing what it got changes no later read
    assert torch.equal(held.get(torch.tensor([3])), images[[3]])
    assert held.labels is data.labels and held.class_names == ("x", "y", "z")
