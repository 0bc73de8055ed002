"""Print the side-by-side table of a pytest-benchmark JSON file written by bench/test_ops_bandwidth.py.

    python bench/summarize.py out.json [--markdown]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("json_file")
    args = parser.parse_args()
    with open(args.json_file) as f:
        data = json.load(f)
    rows = defaultdict(dict)
    env = {}
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if "op" not in info:
            continue
        key = (info["device_name"], info["op"], "x".join(map(str, info["shape"])))
        rows[key][info["variant"]] = info
        env = info
    print(f"torch {env.get('torch')} CUDA {env.get('cuda')} commit {env.get('commit')}, date {data.get('datetime', '')[:10]}")
    print("| device | op | shape | fused TB/s | eager TB/s | copy TB/s | fused / copy | fused vs eager | cluster path TB/s | two-kernel path TB/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (device, op, shape), variants in sorted(rows.items()):
        def tbs(v):
            return variants[v]["tb_per_s"] if v in variants else float("nan")
        fused, eager, copy = tbs("fused"), tbs("eager"), tbs("copy")
        forced = [f"{tbs(v):.3f}" if v in variants else "" for v in ("fused_cluster", "fused_chunked")]
        print(f"| {device} | {op} | {shape} | {fused:.3f} | {eager:.3f} | {copy:.3f} | "
              f"{fused / copy:.0%} | {fused / eager:.1f}x | {forced[0]} | {forced[1]} |")


if __name__ == "__main__":
    main()
