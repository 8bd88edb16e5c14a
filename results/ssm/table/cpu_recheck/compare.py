"""Compares the CPU rerun (``run.sh``) with the H200 record of ``results/ssm/table``: steps 1-2
(100 gradient steps each) of seed 0 of every selective-copying row. Run from the repository
root; prints ``compare.txt`` and writes ``compare.json``."""

import json

HERE = "results/ssm/table/cpu_recheck"


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


rows = []
for m in ["transformer", "s4d", "s4", "mamba", "mamba2"]:
    rec = read(f"results/ssm/table/runs/sc256_{m}/seed0/metrics.jsonl")
    new = read(f"{HERE}/{m}/metrics.jsonl")
    with open(f"{HERE}/{m}/summary.json") as f:
        summ = json.load(f)
    for step in (1, 2):
        a = next(r for r in rec if r["step"] == step)
        b = next(r for r in new if r["step"] == step)
        for k in ("train/loss", "train/token_acc", "train/grad_norm"):
            rows.append((m, step, k, a[k], b[k], abs(a[k] - b[k]) / max(abs(a[k]), 1e-12)))
    print(m, "commit", summ["git"], "wall", round(summ["wall_time_s"]))
for m, step, k, a, b, rel in rows:
    print(f"{m:<12s} step {step} {k:<16s} H200 {a:.6f}  CPU {b:.6f}  rel {rel:.2e}")
with open(f"{HERE}/compare.json", "w") as f:
    json.dump(rows, f, indent=1)
