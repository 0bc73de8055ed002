"""The files of an evaluation folder, in one place: their names, atomic writes, reads and the configuration
check. `lst-fast eval` writes through it and `lst-fast report` reads through it.

    OUT/config.json                                  the EvalConfig (flat JSON; see EvalConfig.to_dict)
    OUT/results/roundRR_chunkCCCCC.safetensors       Table 1 per pair of one chunk of one round
    OUT/results/triangles_rAA_rBB.safetensors        triangle confidences for the rounds AA < BB
    OUT/tables.json, OUT/tables.md                   the tables
    OUT/report.md, OUT/report_*.png                  the report

Every file is written to a temporary name beside it and renamed, so a killed run leaves no partial file
(only `.*.tmp` leftovers, which `remove_leftovers` deletes).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from torch import Tensor

from lst_fast.settings import EvalConfig

_METADATA_KEY = "lst_fast"


def atomic_save(tensors: Dict[str, Tensor], path: Path, metadata: Optional[Dict[str, str]] = None) -> Path:
    """Save tensors (safetensors) to a temporary file beside `path`, then rename it into place."""
    from safetensors.torch import save_file

    return _atomic_write(Path(path), lambda tmp: save_file(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata))


def atomic_write_text(path: Path, text: str) -> Path:
    return _atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))


def _atomic_write(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; results are ordinary files
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_tensors(path: Path) -> Dict[str, Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


class EvaluationStore:
    """One evaluation folder (see the module's docstring for its layout)."""

    def __init__(self, root: Union[str, os.PathLike]) -> None:
        self.root = Path(root)
        self.results = self.root / "results"
        self.config_path = self.root / "config.json"
        self.tables_json = self.root / "tables.json"
        self.tables_md = self.root / "tables.md"

    # -- names ------------------------------------------------------------------------------------------

    def chunk_path(self, round_: int, chunk: int) -> Path:
        return self.results / f"round{round_:02d}_chunk{chunk:05d}.safetensors"

    def triangles_path(self, r1: int, r2: int) -> Path:
        return self.results / f"triangles_r{r1:02d}_r{r2:02d}.safetensors"

    def chunk_files(self) -> List[Path]:
        return sorted(self.results.glob("round*_chunk*.safetensors"))

    # -- the configuration ------------------------------------------------------------------------------

    def check_or_write_config(self, cfg: EvalConfig) -> None:
        """Write config.json, or check that the one there is cfg's; a folder written before a setting
        existed took that setting's default."""
        wanted = cfg.to_dict()
        if self.config_path.exists():
            found = self._read_config_json()
            if isinstance(found, dict):
                found = {**EvalConfig().to_dict(), **found}
            if found != wanted:
                theirs = found if isinstance(found, dict) else {}
                diff = {k: (theirs.get(k), v) for k, v in wanted.items() if theirs.get(k) != v}
                raise ValueError(f"{self.root} holds results of another configuration (differences, theirs vs "
                                 f"ours: {diff}); use a fresh --out folder or the same settings")
            return
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, json.dumps(wanted, indent=1))

    def read_config(self) -> EvalConfig:
        found = self._read_config_json()
        if not isinstance(found, dict):
            raise ValueError(f"{self.config_path} does not hold an evaluation configuration")
        return EvalConfig.from_dict(found)

    def _read_config_json(self):
        try:
            return json.loads(self.config_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{self.config_path} is not valid JSON ({error}); use a fresh --out folder") from error

    def prepare(self) -> None:
        """Make the results folder (the configuration must be written first)."""
        try:
            self.results.mkdir(exist_ok=True)
        except OSError as error:
            raise ValueError(f"cannot write to the output folder {self.root}: {error.strerror or error}") from error

    def remove_leftovers(self) -> None:
        """Delete the temporary files of a killed run (their chunks rerun)."""
        for stale in self.results.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    # -- chunks of a round ------------------------------------------------------------------------------

    def has_chunk(self, round_: int, chunk: int) -> bool:
        """Whether this chunk is finished and may be reused (the one place to vet a chunk before reuse)."""
        return self.chunk_path(round_, chunk).exists()

    def write_chunk(self, round_: int, chunk: int, tensors: Dict[str, Tensor], cfg: EvalConfig) -> Path:
        metadata = {"round": round_, "chunk": chunk, "config": cfg.to_dict()}
        return atomic_save(tensors, self.chunk_path(round_, chunk), {_METADATA_KEY: json.dumps(metadata)})

    def read_chunk(self, round_: int, chunk: int) -> Dict[str, Tensor]:
        return load_tensors(self.chunk_path(round_, chunk))

    def read_round(self, round_: int, chunks: int) -> Dict[str, Tensor]:
        """The chunks of one round, concatenated in order."""
        parts = [self.read_chunk(round_, c) for c in range(chunks)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    # -- triangles --------------------------------------------------------------------------------------

    def has_triangles(self, r1: int, r2: int) -> bool:
        return self.triangles_path(r1, r2).exists()

    def write_triangles(self, r1: int, r2: int, confidence: Tensor) -> Path:
        return atomic_save({"confidence": confidence}, self.triangles_path(r1, r2), {_METADATA_KEY: "{}"})

    def read_triangles(self, r1: int, r2: int) -> Tensor:
        return load_tensors(self.triangles_path(r1, r2))["confidence"]

    # -- tables -----------------------------------------------------------------------------------------

    def write_tables(self, tables: dict, markdown: str) -> None:
        atomic_write_text(self.tables_json, json.dumps(tables, indent=1))
        atomic_write_text(self.tables_md, markdown)

    def read_tables_markdown(self) -> str:
        return self.tables_md.read_text()

    def require_finished(self) -> None:
        """Raise FileNotFoundError unless the evaluation finished (configuration, tables, first chunk)."""
        for needed in (self.config_path, self.tables_md, self.chunk_path(0, 0)):
            if not needed.exists():
                raise FileNotFoundError(f"{self.root} is not a finished evaluation: "
                                        f"{needed.relative_to(self.root)} is missing (run `lst-fast eval` first)")
