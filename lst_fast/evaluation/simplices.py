"""The high-confidence region beyond triangles (docs/ALGORITHM.md section 2, "k-simplices"): for every source
and every k from 2 to R (rounds), the k-simplices spanned by the source and k of its LST outputs, their
confidence at Dirichlet(1, ..., 1) points (geometry.dirichlet_weights), and per k the fraction above
p_src - d and the mean confidence, as one row per k of the evaluation's tables. Off unless asked
(`lst-fast eval --simplex-points N`), so the tables and files of a run without it do not change.

Which simplices: for each k, all C(R, k) subsets of the rounds, or `subsets` of them chosen by a seeded
permutation; the same subsets and the same weights for every source and every model (a paired comparison).
Forwards per source: sum over k of (simplices of k) * (points + 1), the +1 being p at the source vertex.
Each (k, simplex) is one result file (EvaluationStore.simplex_path), the unit of resume.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from lst_fast import plots
from lst_fast.atomic_files import finite_or_none
from lst_fast.checks import check_count
from lst_fast.data.image_set import ImageSet
from lst_fast.distributed import rank_and_world
from lst_fast.errors import InputError
from lst_fast.evaluation.config import EvalConfig
from lst_fast.evaluation.limits import SIMPLEX_POINTS_LIMIT, SIMPLEX_ROUNDS_LIMIT, SIMPLEX_SUBSETS_LIMIT
from lst_fast.evaluation.memory_check import require_memory
from lst_fast.evaluation.store import EvaluationStore
from lst_fast.evaluation.tables import mean_std, round_pairs, table2_per_source
from lst_fast.geometry import TRIANGLE_DROPS, dirichlet_weights, simplex_confidence, simplex_statistics
from lst_fast.stage_times import timed_stage

__all__ = [
    "LEADERBOARD_DROP",
    "SimplexSettings",
    "compute_simplices",
    "fraction_by_k_figure",
    "leaderboard_columns",
    "leaderboard_values",
    "simplex_markdown",
    "simplex_subsets",
    "simplex_tables",
    "simplex_weights",
]

LEADERBOARD_DROP = 0.2  # the leaderboard's columns: the fraction above p_src - 0.2, Table 2's headline
COLUMN_PREFIX = "simplex_k"


@dataclasses.dataclass(frozen=True)
class SimplexSettings:
    """points: Dirichlet points per simplex (>= 2); subsets: simplices per k and source (0: all C(R, k))."""

    points: int = 64
    subsets: int = 0

    def validate(self, rounds: int) -> None:
        """InputError naming the flag when a setting is out of range (before any work starts)."""
        for name, value, minimum, limit in (
            ("points", self.points, 2, SIMPLEX_POINTS_LIMIT),
            ("subsets", self.subsets, 0, SIMPLEX_SUBSETS_LIMIT),
        ):
            check_count(f"--simplex-{name}", value, minimum, limit)
        if rounds < 2:
            raise InputError(f"the k-simplices (--simplex-points) need --rounds >= 2 (k = 2 .. rounds), got {rounds}")
        if rounds > SIMPLEX_ROUNDS_LIMIT:  # every C(rounds, k) subset is listed for each k
            raise InputError(
                f"the k-simplices (--simplex-points) take at most --rounds {SIMPLEX_ROUNDS_LIMIT} (each k lists all "
                f"C(rounds, k) subsets of the rounds), got {rounds}"
            )

    def to_dict(self) -> Dict[str, int]:
        return {"points": int(self.points), "subsets": int(self.subsets)}

    def memory_bytes(self, rounds: int, sources: int) -> int:
        """About the most memory the k-simplices of `sources` sources hold at once: the confidences of every
        simplex of one k (sources x simplices x points, float64) and two temporaries of that size while
        their statistics are computed."""
        widest = max(math.comb(rounds, k) for k in range(2, rounds + 1))
        simplices = widest if self.subsets == 0 else min(widest, self.subsets)
        return 3 * 8 * sources * simplices * (self.points + 1)

    def check_memory(self, rounds: int, sources: int) -> None:
        """EnvironmentFault (one line, the size) when memory_bytes does not fit this machine's memory."""
        require_memory(
            self.memory_bytes(rounds, sources),
            f"--simplex-points {self.points} on {sources} sources and {rounds} rounds",
            "lower --simplex-points (or --simplex-subsets, or the pool)",
        )


def simplex_subsets(rounds: int, k: int, limit: int, seed: int) -> List[Tuple[int, ...]]:
    """The k-subsets of the rounds whose outputs span the simplices: all C(rounds, k) in lexicographic order,
    or, when `limit` is smaller, the first `limit` of a permutation seeded by (seed, k), in that order."""
    every = list(itertools.combinations(range(rounds), k))
    if limit == 0 or limit >= len(every):
        return every
    generator = torch.Generator().manual_seed(_seed(seed, k) + 1)
    return [every[i] for i in torch.randperm(len(every), generator=generator)[:limit].tolist()]


def simplex_weights(k: int, points: int, seed: int) -> Tensor:
    """(points + 1, k + 1) weights: the source vertex (1, 0, ..., 0), then `points` Dirichlet(1, ..., 1) draws
    seeded by (seed, k): the same for every simplex of that k, every source and every model."""
    source = torch.zeros(1, k + 1, dtype=torch.float64)
    source[0, 0] = 1
    return torch.cat([source, dirichlet_weights(points, k + 1, _seed(seed, k))])


def _seed(seed: int, k: int) -> int:
    return (int(seed) * 1_000_003 + k) % 2**62


def _jobs(rounds: int, settings: SimplexSettings, seed: int) -> List[Tuple[int, int, Tuple[int, ...]]]:
    return [
        (k, index, subset)
        for k in range(2, rounds + 1)
        for index, subset in enumerate(simplex_subsets(rounds, k, settings.subsets, seed))
    ]


def forwards_per_source(rounds: int, settings: SimplexSettings, seed: int = 0) -> int:
    """Model evaluations per source: (points + 1) for each simplex of each k."""
    return len(_jobs(rounds, settings, seed)) * (settings.points + 1)


def _position(k: int, subset: Tuple[int, ...], settings: SimplexSettings) -> Dict[str, object]:
    """What a simplex file records besides the configuration (checked before it is reused)."""
    return {"k": k, "rounds": list(subset), "simplex": settings.to_dict()}


@timed_stage("simplices")
def compute_simplices(
    model: torch.nn.Module,
    data: ImageSet,
    pool: Tensor,
    per_round: List[Dict[str, Tensor]],
    store: EvaluationStore,
    cfg: EvalConfig,
    settings: SimplexSettings,
    device: torch.device,
) -> None:
    """Confidence at the Dirichlet points of every (k, simplex), over all sources; this rank's share of the
    simplices, skipping finished files. Sources go to the model cfg.chunk_size at a time (simplex_confidence
    chunks the forwards further by memory)."""
    rank, world = rank_and_world()
    sources = len(pool)
    for k, index, subset in _jobs(cfg.rounds, settings, cfg.seed)[rank::world]:
        position = _position(k, subset, settings)
        shapes = {"p_source": (sources,), "confidence": (sources, settings.points)}
        if store.has_simplex(k, index, cfg, position, shapes):
            continue
        weights = simplex_weights(k, settings.points, cfg.seed)
        parts = []
        for start in range(0, sources, cfg.chunk_size):
            rows = slice(start, start + cfg.chunk_size)
            corners = [data.get(pool[rows])] + [per_round[r]["images"][rows] for r in subset]
            parts.append(
                simplex_confidence(
                    model,
                    torch.stack(corners, 1).to(device),
                    weights,
                    data.labels[pool[rows]].to(device),
                    precision=cfg.lst.precision,
                ).cpu()
            )
        confidence = torch.cat(parts)
        tensors = {"p_source": confidence[:, 0].contiguous(), "confidence": confidence[:, 1:].contiguous()}
        store.write_simplex(k, index, tensors, cfg, position)


def per_source(store: EvaluationStore, cfg: EvalConfig, settings: SimplexSettings) -> Dict[int, Dict[str, Tensor]]:
    """Per k, simplex_statistics per source (float64) from the finished simplex files."""
    files: Dict[int, List[Dict[str, Tensor]]] = {}
    for k, index, _ in _jobs(cfg.rounds, settings, cfg.seed):
        files.setdefault(k, []).append(store.read_simplex(k, index))
    return {
        k: simplex_statistics(torch.stack([f["confidence"] for f in found], 1), found[0]["p_source"])
        for k, found in files.items()
    }


def simplex_tables(store: EvaluationStore, cfg: EvalConfig, settings: SimplexSettings, sources: int) -> Dict[str, Any]:
    """The "simplices" entry of tables.json: one row per k (mean and std over sources of the mean and of each
    fraction; the root mean square of their per-source Monte Carlo standard errors), and, where the k = 2
    simplices are all the triangles of Table 2, the paired difference of Table 2's 66-point grid fraction
    minus the area-uniform one (mean and 95% interval over sources)."""
    stats = per_source(store, cfg, settings)
    names = ["mean"] + [f"frac_above_{d:g}" for d in TRIANGLE_DROPS]
    rows = []
    for k, values in stats.items():
        row: Dict[str, Any] = {"k": k, "simplices": len(simplex_subsets(cfg.rounds, k, settings.subsets, cfg.seed))}
        for name in names:
            mean, std = mean_std(values[name])
            row[name] = [finite_or_none(mean), finite_or_none(std)]
        row["mc_se"] = {name: finite_or_none(float(values[f"se_{name}"].pow(2).mean().sqrt())) for name in names}
        rows.append(row)
    return {
        "settings": settings.to_dict(),
        "forwards_per_source": forwards_per_source(cfg.rounds, settings, cfg.seed),
        "sources": sources,
        "rows": rows,
        "grid_vs_area": _grid_vs_area(store, cfg, settings, stats.get(2), sources),
    }


def _grid_vs_area(
    store: EvaluationStore, cfg: EvalConfig, settings: SimplexSettings, k2: Optional[Dict[str, Tensor]], sources: int
) -> Optional[Dict[str, Dict[str, Optional[float]]]]:
    if k2 is None or simplex_subsets(cfg.rounds, 2, settings.subsets, cfg.seed) != round_pairs(cfg.rounds):
        return None  # the k = 2 simplices are not Table 2's triangles
    triangles = [store.read_triangles(r1, r2) for r1, r2 in round_pairs(cfg.rounds)]
    grid = table2_per_source(triangles, cfg.triangle_n, sources)
    out = {}
    for d in TRIANGLE_DROPS:
        name = f"frac_above_{d:g}"
        diff = grid[name] - k2[name]
        mean = float(diff.mean())
        half = 1.959964 * float(diff.std()) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        out[name] = {
            "difference": finite_or_none(mean),
            "low": finite_or_none(mean - half),
            "high": finite_or_none(mean + half),
        }
    return out


def _cell(pair: Sequence[Optional[float]]) -> str:
    return "n/a" if pair[0] is None else f"{pair[0]:.4f} ± {pair[1] if pair[1] is not None else float('nan'):.4f}"


def simplex_markdown(section: Dict[str, Any]) -> str:
    """The k-simplex rows of OUT/tables.md."""
    settings = section["settings"]
    chosen = "all C(R, k) simplices" if settings["subsets"] == 0 else f"at most {settings['subsets']} simplices"
    lines = [
        "## k-simplices (source + k LST outputs), mean ± std over sources",
        "",
        f"{settings['points']} Dirichlet(1, ..., 1) points per simplex, the same for every source and model; "
        f"{chosen} per k; {section['forwards_per_source']} forwards per source. A fraction is the share of "
        "the simplex's volume with p > p_src - d. MC se: root mean square over sources of the Monte Carlo "
        "standard error of > p_src - 0.2.",
        "",
        "| k | simplices | mean p | > p_src | > p_src - 0.1 | > p_src - 0.2 | > p_src - 0.3 | MC se |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in section["rows"]:
        cells = [_cell(row[name]) for name in ["mean"] + [f"frac_above_{d:g}" for d in TRIANGLE_DROPS]]
        se = row["mc_se"]["frac_above_0.2"]
        se_text = "n/a" if se is None else f"{se:.4f}"
        lines.append(f"| {row['k']} | {row['simplices']} | {' | '.join(cells)} | {se_text} |")
    grid = section["grid_vs_area"]
    if grid is not None:
        parts = [
            f"d = {d:g}: {v['difference']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]"
            for d, v in zip(TRIANGLE_DROPS, grid.values(), strict=True)
            if v["difference"] is not None and v["low"] is not None and v["high"] is not None
        ]
        lines += [
            "",
            "Table 2's 66-point grid minus the area-uniform estimate (k = 2, the same triangles), mean [95% "
            "interval] over sources: " + "; ".join(parts) + ".",
        ]
    return "\n".join(lines) + "\n"


# -- the leaderboard and compare ------------------------------------------------------------------------------


def column_name(k: int) -> str:
    return f"{COLUMN_PREFIX}{k}"


def is_column(name: str) -> bool:
    """Whether `name` is a leaderboard column of the k-simplices (simplex_k2, simplex_k3, ...)."""
    rest = name[len(COLUMN_PREFIX) :] if name.startswith(COLUMN_PREFIX) else ""
    return rest.isdigit() and int(rest) >= 2


def leaderboard_columns(ks: Sequence[int]) -> Dict[str, Tuple[str, str, bool]]:
    """The leaderboard's k-simplex columns, as its COLUMNS: (header, source, higher first)."""
    return {column_name(k): (f"k={k} > p_src - {LEADERBOARD_DROP:g}", "simplices", True) for k in ks}


def leaderboard_values(store: EvaluationStore, cfg: EvalConfig, tables: Dict[str, Any]) -> Dict[str, Tensor]:
    """Per source, the fraction of each k-simplex above p_src - LEADERBOARD_DROP, by column name; empty when
    the evaluation has no k-simplices."""
    section = tables.get("simplices")
    if not section:
        return {}
    settings = SimplexSettings(**section["settings"])
    stats = per_source(store, cfg, settings)
    return {column_name(k): values[f"frac_above_{LEADERBOARD_DROP:g}"] for k, values in stats.items()}


def board_ks(board: Dict[str, Any]) -> List[int]:
    """The k of the leaderboard's k-simplex columns."""
    return sorted(int(name[len(COLUMN_PREFIX) :]) for name in board["columns"] if is_column(name))


def caption(board: Dict[str, Any]) -> str:
    """The leaderboard caption's sentence on the k-simplex columns ("" when it has none)."""
    if not board_ks(board):
        return ""
    return (
        f" k=K columns: the fraction of the K-simplex (source and K of its LST outputs, sampled uniformly with "
        f"Dirichlet weights, the same for every model) with confidence above p_src - {LEADERBOARD_DROP:g}."
    )


def draw_by_k(ax: Any, board: Dict[str, Any]) -> None:
    """The leaderboard figure's panel: the k-simplex fraction against k, one line per model, 95% intervals."""
    ks = board_ks(board)
    rows = board["rows"]
    for i, row in enumerate(rows):
        # (mean, low, high) per k; the bars run from the low to the high end of the interval
        cells = torch.tensor([[row["values"][column_name(k)][part] for k in ks] for part in ("mean", "low", "high")])
        bars = torch.stack([cells[0] - cells[1], cells[2] - cells[0]]).clamp_min(0)
        x = [k + (i - (len(rows) - 1) / 2) * 0.05 for k in ks]
        ax.errorbar(x, cells[0].tolist(), yerr=bars.tolist(), marker="o", capsize=3, label=row["model"])
    _axes_by_k(ax, ks, "fraction (mean, 95% interval)")


def _axes_by_k(ax: Any, ks: Sequence[int], ylabel: str) -> None:
    ax.set_xticks(list(ks))
    ax.set_xlabel(f"k: fraction of the k-simplex with p > p_src - {LEADERBOARD_DROP:g}")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower left")


def fraction_by_k_figure(runs: Sequence[Any], names: Sequence[str], path) -> Optional[Any]:
    """`lst-fast compare`'s figure: per run with k-simplices, the fraction above p_src - LEADERBOARD_DROP
    against k, mean and 95% interval of the mean over its sources (mean +- 1.96 std / sqrt(sources)).
    None (nothing drawn) when no run (a FinishedRun) has k-simplices."""
    drawn = [(n, r.tables["simplices"]) for n, r in zip(names, runs, strict=True) if r.tables.get("simplices")]
    if not drawn:
        return None
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    name = f"frac_above_{LEADERBOARD_DROP:g}"
    ks: List[int] = []
    for label, section in drawn:
        rows = [row for row in section["rows"] if row[name][0] is not None]
        half = [1.959964 * (row[name][1] or 0.0) / math.sqrt(section["sources"]) for row in rows]
        ax.errorbar([r["k"] for r in rows], [r[name][0] for r in rows], yerr=half, marker="o", capsize=3, label=label)
        ks = sorted(set(ks) | {r["k"] for r in rows})
    _axes_by_k(ax, ks, "fraction (mean, 95% interval over sources)")
    fig.tight_layout()
    return plots.save_figure(fig, path)
