#!/usr/bin/env python3
"""Draws bench/out/latest.json (written by bench/run.py) as bench/out/latest.png:
req/s per workload and gateway, and gateway CPU per request. Needs matplotlib
(run.sh puts it in bench/.venv-chart when BENCH_CHART=1)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def main() -> int:
    doc = json.loads((OUT / "latest.json").read_text())
    # Fleet-mode rows run at the rate-limit service's pace: their own table only.
    rows = [r for r in doc["rows"]
            if r["gateway"] != "upstream" and not r["gateway"].endswith("-fleet")]
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    gateways = list(dict.fromkeys(r["gateway"] for r in rows))
    value = {(r["workload"], r["gateway"]): r for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(len(gateways), 1)
    for ax, key, title in ((axes[0], "rps", "req/s (higher is better)"),
                           (axes[1], "cpu_us_per_req", "gateway CPU µs/req (lower is better)")):
        for i, g in enumerate(gateways):
            xs, ys = [], []
            for j, w in enumerate(workloads):
                r = value.get((w, g))
                if r and r.get(key) is not None:
                    xs.append(j + (i - (len(gateways) - 1) / 2) * width)
                    ys.append(r[key])
            bars = ax.bar(xs, ys, width, label=g)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(range(len(workloads)), workloads, rotation=20, ha="right")
        ax.set_title(title)
    axes[0].legend(loc="lower left", framealpha=0.9)
    meta = doc["meta"]
    fig.suptitle(f"aigw bench {meta['when']} ({meta['commit']}), Envoy --concurrency 1, "
                 f"{meta['cpus']} CPUs, noisy shared machine", fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT / "latest.png", dpi=110)
    print(f"chart written to {OUT / 'latest.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
