"""The table of benchmarks/ablation_shapes.sh: box / mask AP, iterations and fps per run and
the mean and spread (min..max over the seeds) per configuration, as markdown.

    python -m benchmarks.ablation_table OUT [-json OUT/ablation.json]

Reads, for every OUT/run_<config>_seed<seed>: train_summary.json (iterations done in the time
budget), OUT/metrics_<tag>.json (evaluate.py -metrics_json) and OUT/speed_<tag>.json
(evaluate.py -benchmark). A run with a file missing is listed as unfinished.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import sys

from benchmarks.common import cpu_description, write_json

CONFIGS = ("plain", "se", "cbam", "ctx", "se_ctx")
LABELS = {
    "plain": "plain YOLACT (official network)",
    "se": "SE attention",
    "cbam": "CBAM attention",
    "ctx": "contextual loss",
    "se_ctx": "SE + contextual loss",
}


def _load(path: str):
    """The JSON object in a file (evaluate.py -benchmark prints a "Loaded weights" line first)."""
    try:
        with open(path) as f:
            text = f.read()
        return json.loads(text[text.index("{"):])
    except (OSError, ValueError):
        return None


def read_runs(out: str) -> list[dict]:
    """One dict per run folder: config, seed, box/mask AP, iterations, fps (None if unfinished)."""
    runs = []
    for folder in sorted(glob.glob(os.path.join(out, "run_*_seed*"))):
        match = re.fullmatch(r"run_(.+)_seed(\d+)", os.path.basename(folder))
        if not match:
            continue
        config, seed = match.group(1), int(match.group(2))
        tag = f"{config}_seed{seed}"
        summary = _load(os.path.join(folder, "train_summary.json"))
        metrics = _load(os.path.join(out, f"metrics_{tag}.json"))
        speed = _load(os.path.join(out, f"speed_{tag}.json"))
        run = {"config": config, "seed": seed, "finished": bool(summary and metrics and speed)}
        if run["finished"]:
            run.update(box_ap=100 * metrics["bbox"]["AP"], mask_ap=100 * metrics["segm"]["AP"],
                       iterations=summary["step"], train_seconds=summary["train_seconds"],
                       fps=speed["fps"], network_ms=speed["network_ms"])
        runs.append(run)
    order = {c: i for i, c in enumerate(CONFIGS)}
    runs.sort(key=lambda r: (order.get(r["config"], len(order)), r["config"], r["seed"]))
    return runs


def _spread(values: list[float], digits: int = 1) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def summary_rows(runs: list[dict]) -> list[dict]:
    """Per configuration: seeds, mean (min..max) box / mask AP, iterations, fps; deltas to plain."""
    done = [r for r in runs if r["finished"]]
    configs = list(dict.fromkeys(r["config"] for r in done))
    means = {}
    rows = []
    for config in configs:
        group = [r for r in done if r["config"] == config]
        means[config] = {k: statistics.fmean(r[k] for r in group) for k in ("box_ap", "mask_ap")}
        rows.append({
            "config": config, "seeds": [r["seed"] for r in group],
            "box_ap": _spread([r["box_ap"] for r in group]),
            "mask_ap": _spread([r["mask_ap"] for r in group]),
            "iterations": _spread([r["iterations"] for r in group], 0),
            "fps": _spread([r["fps"] for r in group], 0),
            "means": means[config],
        })
    base = means.get("plain")
    for row in rows:
        row["delta"] = ("" if base is None or row["config"] == "plain" else
                        f"{row['means']['box_ap'] - base['box_ap']:+.1f} / "
                        f"{row['means']['mask_ap'] - base['mask_ap']:+.1f}")
    return rows


def markdown(runs: list[dict]) -> str:
    lines = ["| configuration | seeds | box AP | mask AP | vs plain (box / mask) | iterations | fps |",
             "|---|---|---|---|---|---|---|"]
    for row in summary_rows(runs):
        lines.append(f"| {LABELS.get(row['config'], row['config'])} | "
                     f"{','.join(map(str, row['seeds']))} | {row['box_ap']} | {row['mask_ap']} | "
                     f"{row['delta'] or '-'} | {row['iterations']} | {row['fps']} |")
    unfinished = [f"{r['config']}_seed{r['seed']}" for r in runs if not r["finished"]]
    if unfinished:
        lines.append(f"\nUnfinished (left out): {', '.join(unfinished)}")
    lines.append("\nPer run (box / mask AP, iterations, fps): " + "; ".join(
        f"{r['config']} seed {r['seed']}: {r['box_ap']:.1f} / {r['mask_ap']:.1f}, "
        f"{r['iterations']}, {r['fps']:.0f}" for r in runs if r["finished"]))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the output folder of benchmarks/ablation_shapes.sh")
    parser.add_argument("-json", default=None, help="also write the runs here (default OUT/ablation.json)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.out):
        print(f"ablation_table: no such folder {args.out!r}", file=sys.stderr)
        return 2
    runs = read_runs(args.out)
    if not runs:
        print(f"ablation_table: no run_<config>_seed<N> folders in {args.out!r}", file=sys.stderr)
        return 2
    print(f"# {cpu_description()}, {os.cpu_count()} cores")
    print(markdown(runs))
    write_json(args.json or os.path.join(args.out, "ablation.json"), runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
