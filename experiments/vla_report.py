"""Table of greedy success per task (IQM and 95% bootstrap CI over seeds) from ``vla`` runs.

    python -m experiments.vla_report --arm "SFT (one demo)=RL_RUN:sft" \
        --arm "SFT (all demos)=SFT_ALL_RUN" --arm "SFT(one)+RL=RL_RUN" [--out table.md]

Each ``RUN`` is a workdir of ``python -m experiments.vla``; ``RUN:sft`` reads that run's
policy at the end of SFT (before RL), ``RUN`` its final policy (``analysis.json``).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from harness.stats import bootstrap_ci, iqm


def load_arm(spec: str) -> dict[str, list[float]]:
    """Per-task per-seed success of ``RUN`` (final policy) or ``RUN:sft`` (policy after SFT)."""
    path, _, which = spec.partition(":")
    with open(os.path.join(path, "analysis.json")) as f:
        report = json.load(f)
    table = report["sft_success" if which == "sft" else "final_success"]
    seeds = len(next(iter(table.values())))
    table["mean"] = [float(np.mean([table[t][s] for t in report["tasks"]])) for s in range(seeds)]
    return table


def markdown(arms: dict[str, dict[str, list[float]]]) -> str:
    tasks = list(next(iter(arms.values())))
    lines = ["| arm | seeds | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 2) + "|"]
    for name, table in arms.items():
        cells = []
        for t in tasks:
            lo, hi = bootstrap_ci(table[t])
            cells.append(f"{iqm(table[t]):.2f} [{lo:.2f}, {hi:.2f}]")
        lines.append(f"| {name} | {len(table[tasks[0]])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def behaviour_markdown(path: str) -> str:
    """Demonstrations vs the SFT and final policies of one run: success, finish step of
    successes, contact steps and off-axis contact fraction per task (mean over seeds)."""
    with open(os.path.join(path, "analysis.json")) as f:
        report = json.load(f)
    keys = ("success", "finish_step_of_successes", "contact_steps", "off_axis_contact_frac")
    lines = ["| policy | task | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for label in ("demo", "sft", "final"):
        stats = report[f"{label}_behaviour"]
        stats = stats if isinstance(stats, list) else [stats]
        for task in report["tasks"]:
            vals = [np.nanmean([s[task][k] for s in stats]) for k in keys]
            lines.append(f"| {label} | {task} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", action="append", default=[], help="name=RUN[:sft]")
    parser.add_argument("--behaviour", default=None, help="RUN: print its behaviour table")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args()
    arms = {}
    for item in args.arm:
        name, _, spec = item.partition("=")
        arms[name] = load_arm(spec)
    table = markdown(arms) if arms else ""
    if args.behaviour:
        table += ("\n\n" if table else "") + behaviour_markdown(args.behaviour)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
