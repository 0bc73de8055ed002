"""Print the side-by-side tables of a pytest-benchmark JSON file written by the benchmarks in bench/:
operator bandwidth (test_ops_bandwidth.py), LST throughput (test_lst_speed.py), bf16 quality parity
(test_quality_parity.py) and an evaluation's stages (test_eval_stages.py); each table appears when its
benchmarks are in the file. A .jsonl file (one benchmark per line, what bench/conftest.py writes under
LST_BENCH_RESULTS as each test ends) works too.

    python bench/summarize.py out.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from lst_fast.commands.bench import MODES, setup_seconds, steady_rate

LST_METHODS = [mode.replace("-", "_") for mode in MODES]  # the benchmarks' names for `lst-fast bench`'s modes


def ops_table(infos) -> None:
    rows = defaultdict(dict)
    for info in infos:
        rows[(info["device_name"], info["op"], "x".join(map(str, info["shape"])))][info["variant"]] = info
    if not rows:
        return
    timings = sorted({v.get("timing", "host clock") for r in rows.values() for v in r.values()})
    print(f"\nOperators: achieved bandwidth (timed by {', '.join(timings)})")
    print(
        "| device | op | shape | fused TB/s | eager TB/s | copy TB/s | fused / copy | fused vs eager "
        "| row groups / copy |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (device, op, shape), variants in sorted(rows.items()):

        def tbs(v, variants=variants):
            return variants[v]["tb_per_s"] if v in variants else float("nan")

        fused, eager, copy = tbs("fused"), tbs("eager"), tbs("copy")
        groups = tbs("fused-row-groups")  # the step on L2-sized row groups (bench/row_groups.py), where timed
        print(
            f"| {device} | {op} | {shape} | {fused:.3f} | {eager:.3f} | {copy:.3f} | "
            f"{fused / copy:.0%} | {fused / eager:.1f}x | {'-' if groups != groups else f'{groups / copy:.0%}'} |"
        )


def print_heading(title: str, columns: list) -> None:
    """A table's title, its header row and the separator row under it."""
    print("\n" + title)
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))


def host_table(infos) -> None:
    """test_ops_bandwidth.py::test_host_overhead_per_call: the host's microseconds per call of the fused step."""
    if not infos:
        return
    columns = ["device", "public op", "kernel called straight", "Python layer", "public op, reference path"]
    print_heading("Host time per call of orthogonal_step on a one-element batch (us, median)", columns)
    rows = defaultdict(dict)
    for i in infos:
        rows[i["device_name"]][i["path"]] = i["us_per_call"]
    for device, us in sorted(rows.items()):
        nan = float("nan")
        public, kernel = us.get("public_op", nan), us.get("kernel", nan)
        print(
            f"| {device} | {public:.1f} | {kernel:.1f} | {public - kernel:.1f} | "
            f"{us.get('public_op_reference', nan):.1f} |"
        )


def speed_table(infos) -> None:
    """Steady rates and set-up seconds from the k and 3k spans (files written before the spans existed
    have one span: their per-call rate is shown, marked). A row is one (device, model, batch, size): every
    mode beside the paper loop, each with its own k (on CUDA the fp32 loops run a smaller k than the bf16
    modes), so every cell has its ratio to the paper loop."""
    runs = defaultdict(dict)
    for info in infos:
        method = "expert_compile" if info["method"] == "expert" else info["method"]  # its name before 2026-11-29
        key = (info["device_name"], info["model"], info["batch"], info["image_size"])
        runs[key].setdefault(method, {})[info.get("span", "k")] = info
    if not runs:
        return
    rows = {}
    for key, methods in runs.items():
        batch = key[2]
        rows[key] = {}
        for method, spans in methods.items():
            if "k" in spans and "3k" in spans:
                k = spans["k"].get("k", spans["k"]["iterations"])
                times = (batch, k, spans["k"]["seconds"], spans["3k"]["seconds"])
                rows[key][method] = (steady_rate(*times), setup_seconds(*times), k)
            else:
                span = next(iter(spans.values()))
                rows[key][method] = (span["img_iter_per_s"], None, span.get("k", span["iterations"]))
    methods = [m for m in LST_METHODS if any(m in r for r in rows.values())]
    print(
        "\nLST throughput: steady img-iter/s (x the paper loop), set-up s per call, k (* = one span only: "
        "per-call rate, set-up included)"
    )
    print("| device | model | batch | px | " + " | ".join(methods) + " |")
    print("|---|---|---|---|" + "---|" * len(methods))
    for (device, model, batch, size), values in sorted(rows.items()):
        base = values.get("paper", (None, None, None))[0]
        cells = []
        for m in methods:
            if m not in values:
                cells.append("")
                continue
            rate, setup, k = values[m]
            ratio = f" ({rate / base:.2f}x)" if base and base == base and rate == rate else ""
            tail = "*" if setup is None else ("" if setup != setup else f", {setup:.2f} s")
            cells.append(("n/a" if rate != rate else f"{rate:,.0f}") + ratio + tail + f", k {k}")
        print(f"| {device} | {model} | {batch} | {size} | " + " | ".join(cells) + " |")


def parity_table(infos) -> None:
    if not infos:
        return
    print("\nQuality parity, bf16 vs exact fp32 (100 images, 400 iterations; bar: 0.01, 0.01, 1 %)")
    print(
        "| device | model | RMS fp32 | RMS bf16 | confidence fp32 | confidence bf16 "
        "| still source fp32 | still source bf16 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for i in sorted(infos, key=lambda i: (i["device_name"], i["model"])):
        print(
            f"| {i['device_name']} | {i['model']} | {i['fp32_rms']:.4f} | {i['bf16_rms']:.4f} | "
            f"{i['fp32_confidence']:.4f} | {i['bf16_confidence']:.4f} | {i['fp32_still_source']:.0%} | "
            f"{i['bf16_still_source']:.0%} |"
        )


def stages_table(infos) -> None:
    """test_eval_stages.py: each stage's rate per wall second and per process CPU second (LST: the steady
    rate from the k and 3k spans)."""
    if not infos:
        return
    columns = ["device", "stage", "model", "settings", "threads, commit", "rate", "unit"]
    print_heading("An evaluation's stages: rate per wall second (per process CPU second)", columns)
    lst = defaultdict(dict)
    for i in infos:
        if i["stage"] == "lst":
            key = (i["device_name"], i["model"], i["precision"], i["batch"], i["image_size"], i["k"], i["threads"])
            lst[key + (i["commit"],)][i["span"]] = i
            continue
        unit = {"pool": "images/s", "decode": "images/s", "triangles": "forwards/s", "evaluation": "sources/s"}
        setting = {
            "pool": lambda i: f"{i['data']}, {i['image_size']} px",
            "decode": lambda i: f"{i['workers']} workers, {i['image_size']} px",
            "triangles": lambda i: f"{i['precision']}, {i['sources']} sources, {i['image_size']} px",
            "evaluation": lambda i: (
                f"{i['files']} JPEG files, {i['count']} sources, {i['rounds']} rounds, {i['iterations']} iterations"
            ),
        }[i["stage"]](i)
        wall, cpu = i["count"] / i["seconds"], i["count"] / i["cpu_seconds"]
        print(
            f"| {i['device_name']} | {i['stage']} | {i.get('model', '')} | {setting} | {i['threads']}, "
            f"{i['commit']} | {wall:,.1f} ({cpu:,.1f}) | {unit[i['stage']]} |"
        )
    for (device, model, precision, batch, size, k, threads, commit), spans in sorted(lst.items()):
        if "k" not in spans or "3k" not in spans:
            continue
        wall = steady_rate(batch, k, spans["k"]["seconds"], spans["3k"]["seconds"])
        cpu = steady_rate(batch, k, spans["k"]["cpu_seconds"], spans["3k"]["cpu_seconds"])
        print(
            f"| {device} | lst | {model} | {precision}, batch {batch}, {size} px, k {k} | {threads}, {commit} "
            f"| {wall:,.1f} ({cpu:,.1f}) | img-iter/s (steady) |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("json_file")
    args = parser.parse_args()
    with open(args.json_file) as f:
        if args.json_file.endswith(".jsonl"):
            benchmarks = [json.loads(line) for line in f if line.strip()]
            data = {"benchmarks": benchmarks, "datetime": benchmarks[0].get("datetime", "") if benchmarks else ""}
        else:
            data = json.load(f)
    infos = [b["extra_info"] for b in data["benchmarks"] if b.get("extra_info")]
    if not infos:
        print("no benchmark results in", args.json_file)
        return
    env = infos[0]
    print(
        f"torch {env.get('torch')} CUDA {env.get('cuda')} commit {env.get('commit')}, "
        f"{env.get('threads')} CPU threads, date {data.get('datetime', '')[:10]}"
    )
    fallback = sorted({i["device_name"] for i in infos if i.get("backend", "native") != "native"})
    if fallback:
        print(f"WARNING: rows on {', '.join(fallback)} timed the pure-PyTorch fallback, not the compiled kernels")
    ops_table([i for i in infos if "op" in i])
    host_table([i for i in infos if i.get("kind") == "host_overhead"])
    speed_table([i for i in infos if i.get("kind") == "lst_speed"])
    parity_table([i for i in infos if i.get("kind") == "parity"])
    stages_table([i for i in infos if i.get("kind") == "eval_stage"])


if __name__ == "__main__":
    main()
