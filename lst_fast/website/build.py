"""build_site: the static site of a leaderboard folder or of evaluation folders (`lst-fast site`).

    OUT/index.html                   the leaderboard (or, for evaluation folders, the runs side by side)
    OUT/side-by-side.html, pairs.js  one pair, every model's LST output (only when the runs are paired)
    OUT/models/<run>/index.html      Tables 1 and 2 and the gallery of every walk (walks.js: its rows)
    OUT/models/<run>/walks/*.html    one page per chosen walk: frames, linear path, triangles, width
    OUT/models/<run>/img/, full/     gallery images (PNG, or JPEG thumbnails of large images); full size
    OUT/static/                      the style sheet and the script
    OUT/cache/<run>.safetensors      the model forwards of the walk pages (reused by a rebuild)

Each run's images are written once: OUT/models/<run>/.built records what they were made from, and a
rebuild with the same files and options skips them (a rebuild after a model is added writes that model's
part and the pages). OUT/.lst-fast-site marks a folder the site made: --out must be new, empty or so marked,
so a build never writes over another folder's files (a leaderboard's leaderboard.png).

A run whose folder names a py: model (the user's own code) is shown without the model unless the build
trusts the folders' code (lst_fast.evaluation.folder_models): its gallery and tables, no walk pages, no
target confidences, and a note that names the flag."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from lst_fast.atomic_files import atomic_write_text, finite_or_none
from lst_fast.checks import check_count
from lst_fast.data.decoded import decoding_once
from lst_fast.errors import InputError
from lst_fast.evaluation.finished import FinishedRun
from lst_fast.evaluation.folder_models import data_without_model, untrusted_model
from lst_fast.evaluation.leaderboard import SHOWN_SETTINGS, caption, model_folder
from lst_fast.evaluation.tables import TABLE1, TABLE1_HEADERS, TABLE2, TABLE2_HEADERS, TITLES
from lst_fast.run_environment import DEFAULT_ENVIRONMENT, RunEnvironment
from lst_fast.stage_times import timed_stage
from lst_fast.website import walk_details as walk_details_module
from lst_fast.website.charts import band_chart, curve_chart, triangle_map
from lst_fast.website.content import checked_content
from lst_fast.website.decoded import DecodedImages
from lst_fast.website.encoding import ImageWriter
from lst_fast.website.images import needs_thumbnail
from lst_fast.website.inputs import finite, load_inputs, paired
from lst_fast.website.page_data import data_script
from lst_fast.website.verdicts import model_verdicts, pair_verdicts
from lst_fast.website.walk_details import ChosenWalks, DetailsCache, target_confidences, walk_details
from lst_fast.website.walks import WalkTable, select_walks, walk_records, walk_table

__all__ = ["DEFAULT_THUMBNAIL", "DEFAULT_WALK_PAGES", "SiteOptions", "build_site"]

DEFAULT_WALK_PAGES = 12
DEFAULT_THUMBNAIL = 96
PACKAGE = Path(__file__).resolve().parent
SITE_MARKER = ".lst-fast-site"  # OUT/.lst-fast-site: this folder is a site, which a rebuild may write over


class SiteOptions:
    """walk_pages: walks per model with a page of their own (None: all); thumbnail: the longest side of a
    gallery image above which a JPEG thumbnail is shown instead; frames: frames per walk page (about);
    seed: the sample of walk pages."""

    def __init__(
        self,
        walk_pages: Optional[int] = DEFAULT_WALK_PAGES,
        thumbnail: int = DEFAULT_THUMBNAIL,
        frames: int = 8,
        seed: int = 0,
    ) -> None:
        for name, value, least in (("walk_pages", walk_pages, 0), ("thumbnail", thumbnail, 8), ("frames", frames, 1)):
            if value is not None:
                check_count(name, value, least)
        self.walk_pages, self.thumbnail, self.frames, self.seed = walk_pages, thumbnail, frames, seed

    def key(self) -> List[Any]:
        return [self.walk_pages, self.thumbnail, self.frames, self.seed]


def _templates():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PACKAGE / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@decoding_once  # one decoded copy of the images for every run's pages (lst_fast.data.decoded)
def build_site(
    paths: Sequence[str],
    out,
    options: Optional[SiteOptions] = None,
    env: RunEnvironment = DEFAULT_ENVIRONMENT,
    trust_folder_code: bool = False,
) -> Path:
    """Write the site of a leaderboard folder or of evaluation folders (`paths`) into `out`; return the path
    of its index.html. Reads the result files; runs the model only for the walk pages (cached in out).
    env: where and how it runs (lst_fast.run_environment: the device, the data and model folders, progress
    bars). trust_folder_code: load the py: models the folders name (their code runs); else those runs are
    shown without their model. `out` must be new, empty or a folder this function made."""
    options = options or SiteOptions()
    runs, board = load_inputs(paths)
    out = Path(out)
    if out.resolve() in {Path(p).resolve() for p in paths}:
        raise InputError(f"--out {out} is one of the input folders; give the site a folder of its own")
    _check_out(out)
    left_out = [untrusted_model(run.cfg.model, run.folder / "config.json", trust_folder_code) for run in runs]
    for run, why in zip(runs, left_out, strict=True):
        if why is not None:  # data a run without its model cannot read: refused before anything is written
            data_without_model(run.cfg.data, env.data_root, why)
    out.mkdir(parents=True, exist_ok=True)
    (out / SITE_MARKER).write_text("made by lst-fast site: a rebuild may write over this folder\n")
    templates = _templates()
    static = out / "static"
    static.mkdir(exist_ok=True)
    for name in ("site.css", "site.js"):
        shutil.copyfile(PACKAGE / "static" / name, static / name)
    not_paired = paired(runs) if len(runs) > 1 else "there is only one run"
    shared = _Shared(runs, DecodedImages(runs, env))  # each walked image decoded once per data set and preprocessing
    pages = [
        _model_part(run, out, templates, options, env, shared, left_out=why, board=board)
        for run, why in zip(runs, left_out, strict=True)
    ]
    if board is not None and (Path(paths[0]) / "leaderboard.png").is_file():
        shutil.copyfile(Path(paths[0]) / "leaderboard.png", out / "leaderboard.png")
    if not_paired is None:
        judged = pair_verdicts(Path(paths[0]), pages) if board is not None else None  # verdict files
        _side_by_side(runs, pages, out, templates, judged)
    else:
        (out / "side-by-side.html").unlink(missing_ok=True)
        (out / "pairs.js").unlink(missing_ok=True)
    index = out / "index.html"
    atomic_write_text(index, _index_page(runs, pages, board, not_paired, templates, out))
    return index


def _check_out(out: Path) -> None:
    """InputError unless `out` is new, an empty folder, or a folder the site made (its marker, or a site
    built before the marker: its index.html and static/site.js)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"--out {out} is a file; give the site a folder (new, empty, or a site built before)")
    made = (out / SITE_MARKER).is_file() or ((out / "index.html").is_file() and (out / "static" / "site.js").is_file())
    if not made and any(out.iterdir()):
        raise InputError(
            f"--out {out} is a folder with files that `lst-fast site` did not make (no {SITE_MARKER}); a site "
            "would write over them: give a new or empty folder"
        )


# -- one run ----------------------------------------------------------------------------------------------


def _class_names(described, data, classes: int) -> List[str]:
    names = data.class_names or getattr(described, "class_names", None)
    if names and len(names) >= classes:
        return [str(n) for n in names]
    return [f"class {k}" for k in range(classes)]


@dataclasses.dataclass(frozen=True)
class _Shared:
    """What every run's part of the build reads: all the runs (the model pages link them) and the images
    decoded once for all of them."""

    runs: List[FinishedRun]
    decoded: DecodedImages


def _model_and_data(run: FinishedRun, decoded: DecodedImages, left_out: Optional[str]):
    """(the model's descriptor, the data in its preprocessing, decoded once for the build); (None, the data)
    when the model is left out, which only an in-memory data set allows (an image file's resize and crop are
    the model's)."""
    from lst_fast.models import resolve_model

    env = decoded.env

    cfg = run.cfg
    if left_out is None:
        described = resolve_model(
            cfg.model, env.device, pretrained=cfg.pretrained, checkpoint=cfg.checkpoint, model_dir=env.model_dir
        )
        return described, decoded.open(cfg.data, described.preprocessing)
    return None, data_without_model(cfg.data, env.data_root, left_out)


def _model_part(
    run,
    out: Path,
    templates,
    options: SiteOptions,
    env: RunEnvironment,
    shared: _Shared,
    left_out: Optional[str] = None,
    board=None,
):
    """Write one run's images, model page and walk pages; return what the other pages need of it. shared: the
    runs and the decoded images of the build (_Shared); left_out:
    why the run's model is not loaded (lst_fast.evaluation.folder_models), or None; board: the leaderboard's
    dict (its verdict matrices go on the model page), or None."""
    described, data = _model_and_data(run, shared.decoded, left_out)
    # the weights and pixels, checked against the folder's provenance; the cache's key (no model: no forwards)
    content = "" if described is None else checked_content(run, described, data, env)
    slug = model_folder(run.name)
    folder = out / "models" / slug
    table = walk_table(run, data, known=shared.decoded.start_rms)
    classes = _class_names(described, data, int(data.labels.max()) + 1)
    count = len(table) if options.walk_pages is None else options.walk_pages
    chosen = [] if described is None else select_walks(table, count, options.seed)
    stamp = hashlib.sha256(json.dumps([run.signature(), options.key(), content]).encode()).hexdigest()
    built = (folder / ".built").is_file() and (folder / ".built").read_text() == stamp
    shape = tuple(data.get(table.source[:1]).shape[1:])
    thumb = needs_thumbnail(torch.empty(shape), options.thumbnail)
    shown_ext = "jpg" if thumb else "png"
    model = None if described is None else described.classifier()
    targets_cache = out / "cache" / f"{slug}-targets.safetensors"
    if model is None:  # the gallery shows n/a under the targets
        target_p = torch.full((len(table),), float("nan"), dtype=torch.float64)
    else:
        target_p = target_confidences(run, model, data, table, cache=targets_cache, device=env.device, content=content)
    with ImageWriter(options.thumbnail) as writer:  # every core encodes, also while the walk pages' forwards run
        chosen_outputs = _write_gallery_images(run, table, data, folder, writer, chosen, built, shown_ext)
        details = walk_details(
            run,
            model,
            data,
            table,
            chosen=ChosenWalks(rows=chosen, outputs=chosen_outputs),
            cache=DetailsCache(out / "cache" / f"{slug}.safetensors", content),
            frames=options.frames,
            env=env,
        )
        if not built and chosen:
            _write_full_images(table, data, folder, chosen, chosen_outputs, details, thumb, writer)
    if not built and chosen:
        atomic_write_text(folder / ".built", stamp)
    part = {
        "run": run,
        "slug": slug,
        "classes": classes,
        "table": table,
        "target_p": target_p,
        "ext": shown_ext,
        "thumb": thumb,
        "chosen": set(chosen),
        "shape": shape,
        "records": walk_records(table, classes, target_p),  # every walk's row, converted once
        "left_out": left_out,
    }
    _walk_pages(part, details, chosen, folder, templates)
    _model_page(part, folder, templates, shared.runs, board)
    return part


@timed_stage("gallery")
def _write_gallery_images(
    run: FinishedRun, table: WalkTable, data, folder: Path, writer: ImageWriter, chosen, built, ext
):
    """Every walk's LST output and every source and target, at the gallery's size (unless built), through
    `writer` (its thumbnail size); returns the chosen walks' stored outputs (full size, float)."""
    wanted = {i: k for k, i in enumerate(chosen)}
    outputs: List[Optional[torch.Tensor]] = [None] * len(chosen)
    img = folder / "img"
    img.mkdir(parents=True, exist_ok=True)
    positions = table.position.tolist()
    row = 0
    for r in range(run.cfg.rounds):
        for c in range(run.chunks):
            images = run.store.read_chunk(r, c)["images"]
            rows = range(row, row + images.shape[0])
            for k, i in enumerate(rows):
                if i in wanted:
                    outputs[wanted[i]] = images[k]
            if not built:
                writer.write_batch(images, [img / f"o{r}-{positions[i]}.{ext}" for i in rows])
            row += images.shape[0]
    if not built:
        indices = torch.unique(torch.cat([table.source, table.target]))
        for start in range(0, len(indices), 256):
            part = indices[start : start + 256]
            writer.write_batch(data.get(part), [img / f"d{index}.{ext}" for index in part.tolist()])
    return torch.stack(outputs) if outputs else torch.empty(0)  # type: ignore[arg-type]


@timed_stage("gallery")
def _write_full_images(table: WalkTable, data, folder: Path, chosen, outputs, details, thumb: bool, writer) -> None:
    """The walk pages' images at full size, through `writer` (an ImageWriter): the frames (and, where the
    gallery shows thumbnails, the source, the output and the target)."""
    full = folder / "full"
    full.mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(chosen):
        name = f"{int(table.round[i])}-{int(table.position[i])}"
        frames = details["frames"][k]
        paths = [full / f"f{name}-{f}.png" for f in range(frames.shape[0])]
        writer.write_batch(frames, paths, 0)  # 8-bit values already: written as they are
        if thumb:
            writer.write(outputs[k], full / f"o{name}.png", 0)
            for index in (int(table.source[i]), int(table.target[i])):
                writer.write(data.get(torch.tensor([index]))[0], full / f"d{index}.png", 0)


def _walk_record(part, i: int) -> Dict[str, Any]:
    """Walk i's row (walks.walk_records, converted once per run)."""
    return part["records"][i]


def _alt(model: str, what: str, w: Dict[str, Any], p: float) -> str:
    return (
        f"{model}: {what} ({w['source_class']} source walked toward the {w['target_class']} target), "
        f"{w['source_class']} confidence {p:.3f}"
    )


@timed_stage("pages")
def _walk_pages(part, details, chosen: List[int], folder: Path, templates) -> None:
    run: FinishedRun = part["run"]
    pages = folder / "walks"
    pages.mkdir(parents=True, exist_ok=True)
    names = {_walk_record(part, i)["name"] for i in chosen}
    for stale in pages.glob("*.html"):  # a page of an earlier build's choice
        if stale.stem not in names:
            stale.unlink()
    if not chosen:
        return
    triangles = run.triangles()
    n = run.cfg.triangle_n
    template = templates.get_template("walk.html")
    iterations = details["frame_iterations"].tolist()
    radii = details["radii"].tolist()
    for k, i in enumerate(chosen):
        w = _walk_record(part, i)
        ext = "png" if part["thumb"] else part["ext"]
        where = "../full/" if part["thumb"] else "../img/"
        frames = [
            {
                "src": f"../full/f{w['name']}-{f}.png",
                "iteration": it,
                "p": finite_or_none(float(details["frame_confidence"][k, f])),
            }
            for f, it in enumerate(iterations)
        ]
        maps = []
        for (r1, r2), conf in sorted(triangles.items()):
            if w["round"] not in (r1, r2):
                continue
            values = conf[w["position"]]
            title = (
                f"{run.name}: {w['source_class']} confidence over the triangle (source, output of round {r1}, "
                f"output of round {r2}): min {float(values.min()):.3f}, mean {float(values.mean()):.3f}"
            )
            maps.append(
                {
                    "svg": triangle_map(values, n, title),
                    "title": title,
                    "corners": [
                        (f"../img/d{w['source']}.{part['ext']}", "source"),
                        (f"../img/o{r1}-{w['position']}.{part['ext']}", f"output, round {r1}"),
                        (f"../img/o{r2}-{w['position']}.{part['ext']}", f"output, round {r2}"),
                    ],
                }
            )
        line = details["line"][k].tolist()
        steps = [s / (len(line) - 1) for s in range(len(line))]
        html = template.render(
            model=run.name,
            slug=part["slug"],
            w=w,
            exact=bool(details["exact"][k]),
            frames=frames,
            source_img=f"{where}d{w['source']}.{ext}",
            target_img=f"{where}d{w['target']}.{ext}",
            output_img=f"{where}o{w['name']}.{ext}",
            alt_source=_alt(run.name, "source", w, w["p0"]),
            alt_output=_alt(run.name, "LST output", w, w["p"]),
            alt_target=_alt(run.name, "target", w, w["pt"]),
            line_svg=curve_chart(
                steps,
                line,
                f"{run.name}: {w['source_class']} confidence along the line from the source (t = 0) to the "
                f"LST output (t = 1)",
                "t",
            ),
            width_svg=band_chart(
                radii,
                low=details["width_low"][k].tolist(),
                high=details["width_high"][k].tolist(),
                title=f"{run.name}: 5% and 95% quantiles of the {w['source_class']} confidence over "
                f"{walk_details_module.WIDTH_DIRECTIONS} random directions orthogonal to (output - source), "
                "against the radius",
                xlabel="radius (l2)",
            ),
            maps=maps,
            settings=_settings_text(run.cfg.to_dict()),
            depth="../../../",
        )
        atomic_write_text(pages / f"{w['name']}.html", html)


def _settings_text(config: Dict[str, Any]) -> str:
    return ", ".join(f"{short}={config.get(key)}" for key, short in SHOWN_SETTINGS)


def _table_rows(tables: Dict[str, Any]) -> List[Dict[str, Any]]:
    found = []
    for key, columns, headers in (("table1", TABLE1, TABLE1_HEADERS), ("table2", TABLE2, TABLE2_HEADERS)):
        values = tables.get(key, {})
        cells = [(headers[c], values[c]) for c in columns if c in values]
        found.append({"title": TITLES[key], "cells": cells})
    return found


@timed_stage("pages")
def _model_page(part, folder: Path, templates, runs, board=None) -> None:
    run: FinishedRun = part["run"]
    records = []
    for i in range(len(part["table"])):
        w = _walk_record(part, i)
        records.append(
            [
                w["round"],
                w["position"],
                w["source"],
                w["target"],
                w["source_class"],
                w["target_class"],
                round(w["p0"], 4),
                round(w["p"], 4),
                round(w["rms"], 4),
                round(w["striking"], 4),
                1 if i in part["chosen"] else 0,
                round(w["pt"], 4),
            ]
        )
    atomic_write_text(
        folder / "walks.js", data_script("LST_WALKS", {"model": run.name, "ext": part["ext"], "walks": records})
    )
    classes = sorted({r[4] for r in records} | {r[5] for r in records}, key=part["classes"].index)
    html = templates.get_template("model.html").render(
        model=run.name,
        tables=_table_rows(run.tables),
        config=run.cfg.to_dict(),
        walks=len(records),
        pages=len(part["chosen"]),
        classes=classes,
        thumb=part["thumb"],
        shape=part["shape"],
        left_out=part["left_out"],
        others=[{"name": r.name, "slug": model_folder(r.name)} for r in runs],
        verdicts=model_verdicts(board, run.name),
        depth="../../",
    )
    atomic_write_text(folder / "index.html", html)


# -- the pages over every run -----------------------------------------------------------------------------


@timed_stage("pages")
def _side_by_side(runs: List[FinishedRun], parts, out: Path, templates, judged=None) -> None:
    first = parts[0]
    pairs = []
    for i in range(len(first["table"])):
        w = _walk_record(first, i)
        outputs = [[p["slug"], round(p["records"][i]["p"], 4)] for p in parts]
        for k, verdict in enumerate(judged[i] if judged else []):  # every model's class and confidence
            outputs[k].append(verdict)
        pairs.append(
            [w["round"], w["position"], w["source"], w["target"], w["source_class"], w["target_class"], outputs]
        )
    data = {"models": [r.name for r in runs], "ext": [p["ext"] for p in parts], "first": first["slug"], "pairs": pairs}
    atomic_write_text(out / "pairs.js", data_script("LST_PAIRS", data))
    html = templates.get_template("side_by_side.html").render(
        models=[{"name": r.name, "slug": p["slug"], "ext": p["ext"]} for r, p in zip(runs, parts, strict=True)],
        first=first["slug"],
        first_ext=first["ext"],
        pair=data["pairs"][0],
        pairs=len(pairs),
        judged=judged is not None,
        depth="",
    )
    atomic_write_text(out / "side-by-side.html", html)


def _bar(cell: Dict[str, float], low: float, high: float) -> Dict[str, float]:
    """Where an interval sits in its column's range, in percent (for the bar under the number)."""
    span = (high - low) or 1.0
    left = (cell["low"] - low) / span * 100
    return {
        "left": left,
        "width": max(1.0, (cell["high"] - cell["low"]) / span * 100),
        "mean": (cell["mean"] - low) / span * 100,
    }


def _known(cell: Dict[str, Any]) -> bool:
    """A cell with a number: its mean and interval are finite (null or NaN in leaderboard.json: n/a)."""
    return all(finite(cell.get(part)) for part in ("mean", "low", "high"))


def _index_page(runs: List[FinishedRun], parts, board, not_paired: Optional[str], templates, out: Path) -> str:
    if board is None:
        columns = [("sources", "sources")] + [(f"table1.{c}", TABLE1_HEADERS[c]) for c in ("rms", "confidence")]
        columns += [(f"table2.{c}", TABLE2_HEADERS[c]) for c in ("mean", "frac_above_0.2")]
        rows = []
        for run, part in zip(runs, parts, strict=True):
            cells = [{"text": str(run.tables["sources"]), "value": run.tables["sources"]}]
            for key, _ in columns[1:]:
                table, column = key.split(".", 1)
                mean, std = run.tables[table][column]
                if finite(mean) and finite(std):
                    cells.append({"text": f"{mean:.3f} ± {std:.3f}", "value": mean})
                else:  # e.g. Table 2 of a one-round run: no triangle
                    cells.append({"text": "n/a", "value": ""})
            rows.append(
                {"model": run.name, "slug": part["slug"], "cells": cells, "settings": _settings_text(run.cfg.to_dict())}
            )
        return templates.get_template("runs.html").render(
            columns=[c[1] for c in columns], rows=rows, not_paired=not_paired, depth=""
        )
    keys = list(board["columns"])
    rows = []
    by_model = {part["run"].name: part for part in parts}  # a model with no sources has a row, no part
    for row in board["rows"]:
        part = by_model.get(row["model"])
        cells = []
        for key in keys:
            cell = row["values"][key]
            known_cells = [r["values"][key] for r in board["rows"] if _known(r["values"][key])]
            low = min((c["low"] for c in known_cells), default=0.0)
            high = max((c["high"] for c in known_cells), default=1.0)
            known = _known(cell)
            cells.append(
                {
                    "text": f"{cell['mean']:.3f}" if known else "n/a",
                    "interval": f"[{cell['low']:.3f}, {cell['high']:.3f}]" if known else "",
                    "value": cell["mean"] if known else "",
                    "bar": _bar(cell, low, high) if known else None,
                }
            )
        rows.append(
            {
                "rank": row["rank"],
                "rank_label": row["rank_label"],
                "model": row["model"],
                "slug": None if part is None else part["slug"],
                "note": row.get("note") if isinstance(row.get("note"), str) else None,
                "sources": row["sources"],
                "cells": cells,
                "settings": _settings_text(row["config"]),
            }
        )
    return templates.get_template("leaderboard.html").render(
        board=board,
        columns=[{"key": k, "header": board["columns"][k], "higher": bool(board["higher_first"][k])} for k in keys],
        rows=rows,
        caption=caption(board),
        figure=(out / "leaderboard.png").is_file(),
        not_paired=not_paired,
        depth="",
    )
