"""The files of an evaluation folder, in one place: their names, atomic writes, reads and the configuration
check. `lst-fast eval` writes through it and `lst-fast report` reads through it.

    OUT/config.json                                  the EvalConfig (flat JSON; see EvalConfig.to_dict)
    OUT/provenance.json                              the weights and pixels it ran, by digest (provenance.py)
    OUT/results/roundRR_chunkCCCCC.safetensors       Table 1 per pair of one chunk of one round
    OUT/results/triangles_rAA_rBB.safetensors        triangle confidences for the rounds AA < BB
    OUT/results/simplex_kKK_sSSS.safetensors         k-simplex SSS of k = KK (eval --simplex-points only)
    OUT/tables.json, OUT/tables.md                   the tables
    OUT/report.md, OUT/report_*.png                  the report
    OUT/walk_cost.json                               each chunk's walk time (cost.py; not a result: no check)

    OUT/.lst-fast.lock                               held (flock) by the run writing the folder; holds its PID

Every file is written through lst_fast.atomic_files (a temporary name beside it, then renamed), so a killed
run leaves no partial file (only `.*.tmp` leftovers, which `remove_leftovers` deletes while the folder's
lock is held). Every chunk and triangle file records the configuration, round(s) and chunk it belongs to;
`has_chunk` and `has_triangles` check that record and the shapes before a file is reused: a file of
another evaluation is refused (ValueError naming it), an unreadable one (truncated, no record) is
recomputed with a warning. A write that fails (disk full) raises RuntimeError naming the file; finished
files are kept.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Union

import torch
from torch import Tensor

from lst_fast.atomic_files import atomic_save_tensors, atomic_write_text, read_json, standard_json
from lst_fast.caller_warning import warn_at_caller
from lst_fast.checks import is_count
from lst_fast.errors import DataError, EnvironmentFault, InputError, MissingFile
from lst_fast.evaluation.config import EvalConfig
from lst_fast.evaluation.provenance import PROVENANCE_NAME, Provenance, read_provenance, write_provenance
from lst_fast.walk.result import METADATA_KEY

LOCK_NAME = ".lst-fast.lock"
# The tensors of a chunk file, one row per pair of the chunk.
CHUNK_KEYS = (
    "source",
    "target",
    "images",
    "initial_confidence",
    "confidence",
    "still_source",
    "accepted_steps",
    "l2",
    "rms",
    "linf",
    "ssim",
)

# Appended to the error of a failed write: nothing finished is lost.
RESUME_ADVICE = "files written before are kept, the same command resumes once it can write"


def load_tensors(path: Path) -> Dict[str, Tensor]:
    """Every tensor of a safetensors file; ValueError naming the file if it cannot be read."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise
    except Exception as error:  # SafetensorError (truncated, not safetensors), OSError
        raise InputError(f"cannot read {path} ({error}); delete it and run the same command to recompute it") from error


def _read_record(path: Path, wanted: Sequence[str]):
    """(recorded metadata, shape per tensor, the `wanted` tensors) of a result file; raises on an
    unreadable file."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        record = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        tensors = {k: f.get_tensor(k) for k in wanted if k in shapes}
    if not isinstance(record, dict):
        raise InputError("its record is not a JSON object")
    return record, shapes, tensors


class EvaluationStore:
    """One evaluation folder (see the module's docstring for its layout)."""

    def __init__(self, root: Union[str, os.PathLike]) -> None:
        self.root = Path(root)
        self.results = self.root / "results"
        self.config_path = self.root / "config.json"
        self.tables_json = self.root / "tables.json"
        self.tables_md = self.root / "tables.md"
        self.provenance_path = self.root / PROVENANCE_NAME

    # -- names ------------------------------------------------------------------------------------------

    def chunk_path(self, round_: int, chunk: int) -> Path:
        return self.results / f"round{round_:02d}_chunk{chunk:05d}.safetensors"

    def triangles_path(self, r1: int, r2: int) -> Path:
        return self.results / f"triangles_r{r1:02d}_r{r2:02d}.safetensors"

    # -- the configuration ------------------------------------------------------------------------------

    def check_or_write_config(self, cfg: EvalConfig) -> None:
        """Write config.json, or check that the one there is cfg's."""
        if self.check_config(cfg):
            return
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, standard_json(cfg.to_dict(), indent=1), RESUME_ADVICE)

    def check_config(self, cfg: EvalConfig) -> bool:
        """Whether config.json exists and is cfg's (writes nothing); ValueError if it is another's or
        malformed."""
        if not self.config_path.exists():
            return False
        found = self._read_config_json()
        if not isinstance(found, dict):
            raise InputError(
                f"{self.config_path} does not hold an evaluation configuration (a JSON object); "
                "use a fresh --out folder"
            )
        diff = _config_difference(found, cfg)
        if diff:
            raise InputError(
                f"{self.root} holds results of another configuration (differences, theirs vs "
                f"ours: {diff}); use a fresh --out folder or the same settings"
            )
        return True

    def read_config(self) -> EvalConfig:
        found = self._read_config_json()
        if not isinstance(found, dict):
            raise InputError(f"{self.config_path} does not hold an evaluation configuration")
        try:
            return EvalConfig.from_dict(found)
        except (TypeError, ValueError, AttributeError) as error:
            raise InputError(f"{self.config_path} holds an invalid evaluation configuration: {error}") from error

    def _read_config_json(self):
        try:
            return json.loads(self.config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{self.config_path} is not valid JSON ({error}); use a fresh --out folder") from error

    # -- what made the results (lst_fast.evaluation.provenance) -------------------------------------------

    def read_provenance(self) -> Optional[Provenance]:
        """OUT/provenance.json, or None for a folder written before lst_fast recorded it."""
        return read_provenance(self.root)

    def write_provenance(self, provenance: Provenance) -> None:
        write_provenance(self.root, provenance, RESUME_ADVICE)

    def has_results(self) -> bool:
        """Whether any result file (chunk, triangles, k-simplex) is there."""
        return self.results.is_dir() and any(self.results.glob("*.safetensors"))

    def discard(self) -> None:
        """Delete what an earlier run wrote (config.json, provenance.json, the tables, the walk timings and the
        result files; nothing else), so the folder starts afresh (`lst-fast eval --restart`). Call it only while holding
        the folder's lock."""
        for path in (self.config_path, self.provenance_path, self.tables_json, self.tables_md):
            path.unlink(missing_ok=True)
        for path in self.root.glob("walk_cost*.json"):  # the earlier run's timings (lst_fast.evaluation.cost)
            path.unlink(missing_ok=True)
        if self.results.is_dir():
            for pattern in ("round*_chunk*.safetensors", "triangles_r*_r*.safetensors", "simplex_k*_s*.safetensors"):
                for path in self.results.glob(pattern):
                    path.unlink(missing_ok=True)

    def prepare(self) -> None:
        """Make the results folder (the configuration must be written first)."""
        try:
            self.results.mkdir(exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot write to the output folder {self.root}: {error.strerror or error}") from error

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (flock on OUT/.lst-fast.lock, released when the process ends, even by
        SIGKILL); a second run refuses at once with an EnvironmentFault naming the folder and the holder's PID.
        Under torchrun only rank 0 takes it, for the whole run.

        Hand-rolled, not the `filelock` package torch installs: its flock lock has no way to record or read
        the holder's PID (its `pid` exists only for its soft, flock-less fallback), and filelock 3.x (torch
        pins no version) opens the lock file with O_TRUNC before trying the lock, so every refused run would
        erase the PID the holder wrote and the refusal could not name it."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise InputError(f"cannot write to the output folder {self.root}: {error.strerror or error}") from error
        try:
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise EnvironmentFault(
                    f"{self.root} is in use by another lst-fast eval (pid {holder}); wait for it "
                    "to finish or use another --out folder"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

    def remove_leftovers(self) -> None:
        """Delete the temporary files of a killed run (their chunks rerun). Call it only while holding
        the folder's lock: another live run's temporary files are then impossible."""
        for folder in (self.root, self.results):
            for stale in folder.glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    # -- chunks of a round ------------------------------------------------------------------------------

    def has_chunk(
        self,
        round_: int,
        chunk: int,
        cfg: EvalConfig,
        source: Optional[Tensor] = None,
        target: Optional[Tensor] = None,
        image_shape: Optional[Sequence[int]] = None,
        provenance: Optional[Provenance] = None,
    ) -> bool:
        """Whether this chunk is finished and may be reused (the one place to vet a chunk before reuse):
        its recorded configuration, round and chunk must be these, and when given, its source and target
        indices and its image shape (C, H, W) too, with one row per pair in every tensor of CHUNK_KEYS, and
        the weights and pixel digests it records (a file written before they were recorded has none).
        A file of another evaluation: ValueError naming it. An unreadable one: False, with a warning."""
        path = self.chunk_path(round_, chunk)
        if not path.exists():
            return False
        try:
            record, shapes, found = _read_record(path, ("source", "target"))
        except Exception as error:  # truncated, not safetensors, bad record
            return _recompute(path, f"it cannot be read ({error})")
        if "config" not in record:
            return _recompute(path, "it records no configuration")
        problems = _record_problems(record, cfg, {"round": round_, "chunk": chunk})
        if provenance is not None and record.get("digests", provenance.digests()) != provenance.digests():
            problems.append(f"it was made by other weights or pixels (its digests {record.get('digests')})")
        if (source is None) != (target is None):
            raise InputError("has_chunk takes both source and target, or neither")
        if source is not None and target is not None:
            missing = [k for k in CHUNK_KEYS if k not in shapes]
            rows = len(source)
            if missing:
                problems.append(f"it lacks {missing}")
            elif not torch.equal(found["source"], source.cpu()) or not torch.equal(found["target"], target.cpu()):
                problems.append("its source or target images are not this pool's")
            elif any(shapes[k][:1] != (rows,) for k in CHUNK_KEYS):
                problems.append(f"its tensors do not have {rows} rows: {shapes}")
            elif image_shape is not None and shapes["images"][1:] != tuple(image_shape):
                problems.append(f"its images have shape {shapes['images'][1:]}, the data {tuple(image_shape)}")
        _refuse(path, problems)
        return True

    def write_chunk(
        self,
        round_: int,
        chunk: int,
        tensors: Dict[str, Tensor],
        cfg: EvalConfig,
        provenance: Optional[Provenance] = None,
    ) -> Path:
        metadata = {"round": round_, "chunk": chunk, "config": cfg.to_dict()}
        if provenance is not None:  # which weights and pixels made it (checked by has_chunk)
            metadata["digests"] = provenance.digests()
        return atomic_save_tensors(
            tensors,
            self.chunk_path(round_, chunk),
            {METADATA_KEY: json.dumps(metadata, allow_nan=False)},
            RESUME_ADVICE,
        )

    def read_chunk(self, round_: int, chunk: int) -> Dict[str, Tensor]:
        return load_tensors(self.chunk_path(round_, chunk))

    def read_round(self, round_: int, chunks: int) -> Dict[str, Tensor]:
        """The chunks of one round, concatenated in order."""
        parts = [self.read_chunk(round_, c) for c in range(chunks)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    # -- triangles --------------------------------------------------------------------------------------

    def has_triangles(self, r1: int, r2: int, cfg: EvalConfig, shape: Optional[Sequence[int]] = None) -> bool:
        """As has_chunk, for the triangle file of rounds r1 < r2: its recorded configuration and rounds,
        and when given the shape (sources, grid points) of its confidences."""
        path = self.triangles_path(r1, r2)
        shapes = _vetted_shapes(path, cfg, {"rounds": [r1, r2]})
        if shapes is None:
            return False
        if shape is not None and shapes.get("confidence") != tuple(shape):
            _refuse(path, [f"its confidences have shape {shapes.get('confidence')}, expected {tuple(shape)}"])
        return True

    def write_triangles(self, r1: int, r2: int, confidence: Tensor, cfg: EvalConfig) -> Path:
        metadata = {"rounds": [r1, r2], "config": cfg.to_dict()}
        return atomic_save_tensors(
            {"confidence": confidence},
            self.triangles_path(r1, r2),
            {METADATA_KEY: json.dumps(metadata, allow_nan=False)},
            RESUME_ADVICE,
        )

    def read_triangles(self, r1: int, r2: int) -> Tensor:
        path = self.triangles_path(r1, r2)
        tensors = load_tensors(path)
        if "confidence" not in tensors:
            raise InputError(f"{path} holds no triangle confidences; delete it and run the same command")
        return tensors["confidence"]

    # -- k-simplices (lst_fast.evaluation.simplices) ------------------------------------------------------

    def simplex_path(self, k: int, index: int) -> Path:
        return self.results / f"simplex_k{k:02d}_s{index:03d}.safetensors"

    def has_simplex(
        self, k: int, index: int, cfg: EvalConfig, position: Dict[str, object], shapes: Dict[str, Sequence[int]]
    ) -> bool:
        """As has_triangles, for simplex `index` of k: its recorded configuration and `position` (its k,
        rounds and simplex settings), and the `shapes` of its tensors."""
        path = self.simplex_path(k, index)
        found = _vetted_shapes(path, cfg, position)
        if found is None:
            return False
        _refuse(
            path,
            [
                f"its {name} has shape {found.get(name)}, expected {tuple(shape)}"
                for name, shape in shapes.items()
                if found.get(name) != tuple(shape)
            ],
        )
        return True

    def write_simplex(
        self, k: int, index: int, tensors: Dict[str, Tensor], cfg: EvalConfig, position: Dict[str, object]
    ) -> Path:
        metadata = {**position, "config": cfg.to_dict()}
        return atomic_save_tensors(
            tensors, self.simplex_path(k, index), {METADATA_KEY: json.dumps(metadata, allow_nan=False)}, RESUME_ADVICE
        )

    def read_simplex(self, k: int, index: int) -> Dict[str, Tensor]:
        return load_tensors(self.simplex_path(k, index))

    # -- tables -----------------------------------------------------------------------------------------

    def write_tables(self, tables: dict, markdown: str) -> None:
        atomic_write_text(self.tables_json, standard_json(tables, indent=1), RESUME_ADVICE)
        atomic_write_text(self.tables_md, markdown, RESUME_ADVICE)

    def read_tables_markdown(self) -> str:
        return self.tables_md.read_text()

    def read_tables(self) -> dict:
        """tables.json, its cells (mean, std) with NaN where the file has null (no value); DataError naming
        the file when it is not readable JSON (truncated) or not the tables an evaluation writes."""
        tables = read_json(self.tables_json, "the same `lst-fast eval` command")
        problem = _tables_problem(tables)
        if problem is not None:
            raise DataError(f"{self.tables_json} is not the tables of an evaluation: {problem}")
        for key in ("table1", "table2"):
            cells = tables.get(key)
            if isinstance(cells, dict):
                tables[key] = {k: [math.nan if v is None else v for v in cell] for k, cell in cells.items()}
        return tables

    def chunks_per_round(self) -> int:
        """How many chunk files each round of a finished evaluation has (from its tables and config)."""
        return math.ceil(int(self.read_tables()["sources"]) / self.read_config().chunk_size)

    def unfinished(self) -> Optional[str]:
        """What is missing, or None when the evaluation finished: the one definition of finished, which
        `lst-fast report` and `lst-fast compare` both ask. Finished: config.json, tables.md, tables.json
        and every chunk file of every round are there."""
        for needed in (self.config_path, self.tables_md, self.tables_json):
            if not needed.is_file():
                return f"{needed.name} is missing"
        chunks, rounds = self.chunks_per_round(), self.read_config().rounds
        paths = [self.chunk_path(r, c) for r in range(rounds) for c in range(chunks)]
        missing = [str(path.relative_to(self.root)) for path in paths if not path.is_file()]
        if missing:
            return f"{len(missing)} result file(s) missing, e.g. {missing[0]}"
        return None

    def require_finished(self) -> None:
        """Raise MissingFile (a FileNotFoundError) unless the evaluation finished (see `unfinished`)."""
        missing = self.unfinished()
        if missing:
            raise MissingFile(f"{self.root} is not a finished evaluation: {missing} (run `lst-fast eval` first)")


def _tables_problem(tables: object) -> Optional[str]:
    """What keeps tables.json's content from being an evaluation's tables, or None."""
    if not isinstance(tables, dict):
        return "not a JSON object"
    sources = tables.get("sources")
    if not is_count(sources, 1):
        return f"'sources' must be a count >= 1, got {sources!r}"
    for key in ("table1", "table2"):
        cells = tables.get(key)
        if not isinstance(cells, dict):
            return f"no {key!r} object"
        for name, cell in cells.items():
            if not isinstance(cell, list) or len(cell) != 2:
                return f"{key}.{name} must be [mean, std], got {cell!r}"
            if any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))) for v in cell):
                return f"{key}.{name} must hold numbers or null, got {cell!r}"
    return None


def _config_difference(found: dict, cfg: EvalConfig) -> dict:
    """{setting: (theirs, ours)} where a recorded configuration differs from cfg (a setting it does not
    record differs as None)."""
    wanted = json.loads(json.dumps(cfg.to_dict()))
    theirs = found
    return {k: (theirs.get(k), v) for k, v in wanted.items() if theirs.get(k) != v} | {
        k: (theirs[k], None) for k in theirs if k not in wanted
    }


def _record_problems(record: dict, cfg: EvalConfig, position: dict) -> List[str]:
    problems = []
    config = record.get("config")
    diff = _config_difference(config, cfg) if isinstance(config, dict) else {"config": (config, "a dict")}
    if diff:
        problems.append(f"it was written by another configuration (theirs vs ours: {diff})")
    for key, value in position.items():
        if record.get(key) != value:
            problems.append(f"it records {key} {record.get(key)}, expected {value}")
    return problems


def _vetted_shapes(path: Path, cfg: EvalConfig, position: dict) -> Optional[Dict[str, tuple]]:
    """The shape of each tensor of a result file whose record is cfg's at `position` (another's: ValueError
    naming it); None when it is missing or unreadable (recomputed, with a warning)."""
    if not path.exists():
        return None
    try:
        record, shapes, _ = _read_record(path, ())
    except Exception as error:
        _recompute(path, f"it cannot be read ({error})")
        return None
    if "config" not in record:
        _recompute(path, "it records no configuration")
        return None
    _refuse(path, _record_problems(record, cfg, position))
    return shapes


def _refuse(path: Path, problems: List[str]) -> None:
    if problems:
        raise InputError(
            f"{path} does not belong to this evaluation: {'; '.join(problems)}. Use a fresh --out "
            "folder, or delete the file to recompute it"
        )


def _recompute(path: Path, why: str) -> bool:
    """Warn (at the first line outside lst_fast) that the file is recomputed; False."""
    warn_at_caller(f"{path}: {why}; recomputing it", RuntimeWarning)
    return False
