"""The upper bounds of the counts whose cost grows with their value: the flags check them when parsed
(lst_fast.cli.arguments), the settings when built (EvalConfig, SimplexSettings) and a pool file when read
(lst_fast.evaluation.pool_file), so a count too large to compute is refused in one line before any work,
not found out by a hang or an out-of-memory error after it.

Each bound is far above what a run needs (the paper: 5 rounds, 1,000 sources, 66 points per triangle, 1,000
resamples) and low enough that what it sizes can be held and computed. The two bounds of the leaderboard's
own flags that are no cost (its fewest resamples, its most decimals) are here too, so the flags and
run_leaderboard read one number.
"""

from __future__ import annotations

__all__ = [
    "BATCH_LIMIT",
    "DIGITS_LIMIT",
    "NUM_SAMPLES_LIMIT",
    "RESAMPLES_LIMIT",
    "RESAMPLES_MINIMUM",
    "ROUNDS_LIMIT",
    "SEED_LIMIT",
    "SIDE_LIMIT",
    "SIMPLEX_POINTS_LIMIT",
    "SIMPLEX_ROUNDS_LIMIT",
    "SIMPLEX_SUBSETS_LIMIT",
    "TRIANGLE_N_LIMIT",
    "WORKERS_LIMIT",
]

SEED_LIMIT = 2**32  # seeds are in [0, 2**32): every derived seed (seed * 1_000_003 + ...) fits torch's 64 bits
# rounds of targets: each is a derangement of the pool and a full LST over it; C(rounds, 2) triangle files
ROUNDS_LIMIT = 100
# with k-simplices, every C(rounds, k) subset is listed for each k (C(20, 10) = 184,756)
SIMPLEX_ROUNDS_LIMIT = 20
SIMPLEX_POINTS_LIMIT = 1_000_000  # Dirichlet points per simplex: (sources, points) float64 per simplex file
SIMPLEX_SUBSETS_LIMIT = 1_000_000
# triangle grid steps per edge: (n + 1)(n + 2) / 2 points per triangle (20,301 at 200; the paper: 10, 66 points)
TRIANGLE_N_LIMIT = 200
NUM_SAMPLES_LIMIT = 10_000_000  # sources in a pool (ImageNet's training set has 1.28 million images)
RESAMPLES_LIMIT = 1_000_000  # bootstrap resamples: (resamples, positions) counts, checked against the memory too
BATCH_LIMIT = 65_536  # images per scan batch and per result chunk, decoded and held at once
WORKERS_LIMIT = 256  # decoding processes
SIDE_LIMIT = 16_384  # pixels per side of a model's input: an image set decodes its pool at this size
RESAMPLES_MINIMUM = 10  # fewer bootstrap resamples give no interval worth printing
DIGITS_LIMIT = 12  # decimals in a table: float64 holds about 15 significant digits
