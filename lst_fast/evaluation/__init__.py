"""The full evaluation (Tables 1 and 2, docs/ALGORITHM.md section 3), one concern per module:

config    EvalConfig: what an evaluation computes (OUT/config.json)
targets   each round's targets: a seeded cross-class derangement of the pool
pool      the shared pool of several models: build_pool (a seeded scan that stops when full), pool.json
runner    run_evaluation: pool, rounds of LST, triangles, tables (resumable, torchrun-aware)
store     EvaluationStore: the files of an evaluation folder, their checks and its lock
tables    the tables' columns and titles, their numbers and their Markdown/LaTeX
report    write_report: OUT/report.md with figures (`lst-fast report`)
finished  load_finished: the one loader of a finished evaluation (compare, the site)
compare   write_comparison: finished evaluations side by side (`lst-fast compare`)
leaderboard  run_leaderboard: many models on one pool, ranked with bootstrap intervals (`lst-fast leaderboard`)
"""

from lst_fast.evaluation.compare import write_comparison
from lst_fast.evaluation.config import EvalConfig
from lst_fast.evaluation.leaderboard import run_leaderboard
from lst_fast.evaluation.pool import Pool, build_pool, load_pool
from lst_fast.evaluation.report import write_report
from lst_fast.evaluation.runner import run_evaluation
from lst_fast.evaluation.store import EvaluationStore

__all__ = [
    "EvalConfig",
    "EvaluationStore",
    "Pool",
    "build_pool",
    "load_pool",
    "run_evaluation",
    "run_leaderboard",
    "write_comparison",
    "write_report",
]
