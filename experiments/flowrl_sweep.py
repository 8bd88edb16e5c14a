"""Sweep over algorithms and seeds from one SFT start per seed; writes a results table.

    python -m experiments.flowrl_sweep --root /work/results/flowrl/sweep \
        --presets cpu,cpu_countdown --algos grpo,ppo,flowrl,hpt --seeds 0,1,2 [--ttrl]

Issue 15 presets (long; see experiments/configs/flowrl.py):

    python -m experiments.flowrl_sweep --root results/flowrl/strong --presets arith_strong \
        --algos sft_continued,grpo,dr_grpo,dapo,ppo,flowrl,hpt --seeds 0,1,2,3,4 --nottrl
    python -m experiments.flowrl_sweep --root results/flowrl/multi --presets countdown_multi \
        --algos sft_continued,grpo,dr_grpo,dapo,ppo,flowrl,hpt --seeds 0,1,2,3,4 --nottrl
    python -m experiments.flowrl_sweep --root results/flowrl/ttrl \
        --presets ttrl_strong,ttrl_strong_oracle --seeds 0,1,2,3,4 --nottrl \
        --paired_presets ttrl_strong:ttrl_strong_oracle
    python -m experiments.flowrl_sweep --root results/flowrl/ttrl_majority \
        --presets ttrl_majority,ttrl_majority_oracle --seeds 0,1,2,3,4 --lrs 1e-4,3e-4 --nottrl \
        --paired_presets ttrl_majority:ttrl_majority_oracle

``--lrs 1e-4,3e-4,1e-3`` is the learning-rate sweep (issue 15 §4a): each lr runs the whole sweep
in ``<root>/lr<lr>/`` (its own table and figures there; ``rl.lr`` set, everything else equal,
one SFT cache ``<root>/sft_cache`` for all) and ``<root>/lr_sweep.{md,json,png}`` put the lrs side
by side: final pass@1 per arm and lr, and the lr each arm is best at.

    python -m experiments.flowrl_sweep --root results/flowrl/lr_sweep --presets arith_strong \
        --algos sft_continued,grpo,dr_grpo,dapo,ppo,flowrl,hpt --seeds 0,1 --lrs 1e-4,3e-4,1e-3 \
        --nottrl

``--set key=value`` (repeatable) overrides config fields of every run, e.g. a tiny-budget check
``--set rl.num_updates=2 --set sft.steps=5 --set eval.num_prompts=8 --set eval.num_samples=4``.
Presets in ``FIXED_ALGO_PRESETS`` (TTRL) keep their own algorithm.

Each run is ``flowrl.trainer.train_and_evaluate`` in ``<root>/<preset>/<algo>/seed<k>``; all runs
of one (preset, algo) share compiled functions (one process), and all algorithms of one seed
share the SFT start (``sft.cache_dir = <root>/sft_cache``). ``--ttrl`` adds the ``cpu_ttrl``
preset (GRPO on the unlabelled test prompts with the majority-vote reward). Finished runs are
skipped, so rerunning resumes. The table (IQM with a 95% bootstrap CI over seeds of the final evaluation,
and of the SFT start) goes to ``<root>/results.md`` and ``<root>/results.json``; pass@k curves
(IQM over seeds, k = 1, 2, 4, ..., n) to ``<root>/<preset>_pass_at_k.png``; eval pass@1 against
RL update to ``<root>/<preset>_curves.png``. For each arm of ``--paired_with`` in the sweep
(default ``sft_continued``, the control, and ``grpo``) the table ends with every other arm's final
minus that arm's on the same seeds (paired by seed).
"""

from __future__ import annotations

import ast
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import harness  # noqa: E402
from experiments.configs import flowrl as flowrl_configs  # noqa: E402
from flowrl import trainer as flowrl_trainer  # noqa: E402
from harness.stats import bootstrap_ci, iqm  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("root", None, "Output root directory.")
flags.DEFINE_list("presets", ["cpu", "cpu_countdown"], "Config presets (tasks).")
flags.DEFINE_list("algos", ["grpo", "ppo", "flowrl", "hpt"], "Algorithms.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_bool("ttrl", True, "Also run the cpu_ttrl preset (GRPO + majority vote).")
flags.DEFINE_integer("num_updates", 0, "Override rl.num_updates (0 = preset value).")
flags.DEFINE_bool("table_only", False, "Only rebuild the table from finished runs.")
flags.DEFINE_multi_string("set", [], "Config override key=value (Python literal), repeatable.")
flags.DEFINE_list(
    "paired_with",
    ["sft_continued", "grpo"],  # CONTROL_ALGO first
    "Arms every other arm is paired against, seed by seed (a table each, when in the sweep).",
)
flags.DEFINE_list(
    "paired_presets",
    [],
    "preset:control_preset pairs; a table of each algo's final minus the control preset's.",
)
flags.DEFINE_list("lrs", [], "Learning-rate sweep: one sub-sweep per rl.lr in <root>/lr<lr>/.")
flags.mark_flags_as_required(["root"])

COLUMNS = ("eval/pass@1", "eval/pass@{n}", "eval/maj@{n}", "eval/distinct_correct")
CONTROL_ALGO = "sft_continued"  # the arm every RL arm is paired against, seed by seed
LR_METRIC = "eval/pass@1"  # what the learning-rate sweep ranks by
SFT_STEPS = "sft_steps"  # start_eval.json: SFT steps the start took (sft.until_maj)
TTRL_WINDOW = 20  # updates averaged at each end of a TTRL run's label-accuracy trend


def _config(preset: str, algo: str | None, seed: int, lr: float | None = None):
    c = flowrl_configs.get_config(preset)
    if algo is not None:
        c.rl.algo = algo
    c.seed = seed
    c.progress = False
    # The SFT start does not depend on rl.*, so every lr of a sweep shares it.
    c.sft.cache_dir = os.path.join(FLAGS.root, "sft_cache")
    if FLAGS.num_updates:
        c.rl.num_updates = FLAGS.num_updates
    for item in FLAGS.set:
        apply_override(c, item)
    if lr is not None:
        c.rl.lr = lr
    return c


def lr_root(root: str, lr: float) -> str:
    """``<root>/lr<lr>``, e.g. ``lr0.0003``."""
    return os.path.join(root, f"lr{lr:g}")


def apply_override(config, item: str) -> None:
    """Sets ``a.b.c=value`` on ``config`` (value parsed as a Python literal, else a string)."""
    key, sep, raw = item.partition("=")
    if not sep:
        raise app.UsageError(f"--set {item!r}: expected key=value")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value


def _runs():
    for preset in FLAGS.presets:
        if preset in flowrl_configs.FIXED_ALGO_PRESETS:
            yield preset, None
            continue
        for algo in FLAGS.algos:
            yield preset, algo
    if FLAGS.ttrl:
        yield "cpu_ttrl", None


def run_all(root: str, lr: float | None = None) -> None:
    for preset, algo in _runs():
        trainer = None
        for seed in map(int, FLAGS.seeds):
            config = _config(preset, algo, seed, lr)
            workdir = os.path.join(root, preset, config.rl.algo, f"seed{seed}")
            if os.path.exists(os.path.join(workdir, "summary.json")):
                continue
            if trainer is None:
                trainer = flowrl_trainer.build(config)
            print(f"== {preset} {config.rl.algo} seed {seed} -> {workdir}", flush=True)
            flowrl_trainer.train_and_evaluate(config, workdir, trainer=trainer)


def _fmt(values) -> str:
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return f"{v.mean():.3f}"
    lo, hi = bootstrap_ci(v)
    return f"{iqm(v):.3f} [{lo:.3f}, {hi:.3f}]"


def _figures_per_preset(records, root, suffix, draw, xlabel, ylabel, title) -> None:
    """One figure per preset at ``<root>/<preset>_<suffix>.png``: ``draw(ax, preset, recs)``
    draws that preset's records (one per algo)."""
    by_preset: dict[str, list] = {}
    for r in records:
        by_preset.setdefault(r["preset"], []).append(r)
    for preset, recs in by_preset.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        draw(ax, preset, recs)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{preset}: {title}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(root, f"{preset}_{suffix}.png"), dpi=100)
        plt.close(fig)


def pass_at_k_curves(records, root: str) -> None:
    """IQM over seeds of the final pass@k against k, one line per algo (dashed: the SFT start)."""

    def draw(ax, preset, recs):
        for i, r in enumerate(recs):
            ks = r["pass_at_k"]["k"]
            final = [iqm(v) for v in np.asarray(r["pass_at_k"]["final"]).T]
            ax.plot(ks, final, marker="o", label=r["algo"])
            if i == 0:
                start = [iqm(v) for v in np.asarray(r["pass_at_k"]["start"]).T]
                ax.plot(ks, start, "k--", label="SFT start")
        ax.set_xscale("log", base=2)

    _figures_per_preset(records, root, "pass_at_k", draw, "k (samples)",
                        "pass@k (IQM over seeds)", "pass@k after RL")  # fmt: skip


def _side(record, which: str = "final"):
    return record["seeds"], record["columns"], record[which]


def paired_table(title: str, pairs) -> list[str]:
    """Markdown rows ``| label | seeds | ... |``: for each ``(label, mine, theirs)`` (each a
    ``(seeds, columns, values [seed][column])`` side), mine minus theirs on the seeds and columns
    both have (columns with a NaN on either side dropped), IQM [95% bootstrap CI] over seeds."""
    lines, header = [], None
    for label, (ms, mc, mv), (ts, tc, tv) in pairs:
        common = sorted(set(ms) & set(ts))
        mine = {c: np.array([mv[ms.index(s)][mc.index(c)] for s in common]) for c in mc if c in tc}
        theirs = {c: np.array([tv[ts.index(s)][tc.index(c)] for s in common]) for c in mine}
        cols = [c for c in mine if c != SFT_STEPS and np.isfinite([mine[c], theirs[c]]).all()]
        if not common or not cols:
            continue
        if not lines:
            lines = ["", title]
        if cols != header:
            header = cols
            lines += [
                "",
                "| run | seeds | " + " | ".join(cols) + " |",
                "|---" * (len(cols) + 2) + "|",
            ]
        cells = [_fmt(mine[c] - theirs[c]) for c in cols]
        lines.append(f"| {label} | {len(common)} | " + " | ".join(cells) + " |")
    return lines


def paired_deltas(records, control_algo: str = CONTROL_ALGO) -> list[str]:
    """Per (preset, algo), final minus the ``control_algo`` arm's final on the same seeds (the
    arms of one seed share the SFT start, so pairing removes the start's seed-to-seed spread)."""
    control = {r["preset"]: r for r in records if r["algo"] == control_algo}
    pairs = [
        (f"{r['preset']} / {r['algo']}", _side(r), _side(control[r["preset"]]))
        for r in records
        if r["preset"] in control and r is not control[r["preset"]]
    ]
    title = f"Final minus {control_algo} on the same seeds (paired), IQM [95% bootstrap CI]"
    return paired_table(title, pairs)


def start_deltas(records) -> list[str]:
    """Per (preset, algo), final minus its own SFT start, seed by seed: what the arm gained."""
    pairs = [(f"{r['preset']} / {r['algo']}", _side(r), _side(r, "start")) for r in records]
    return paired_table("Final minus the SFT start (paired), IQM [95% bootstrap CI]", pairs)


def preset_deltas(records, preset: str, control_preset: str) -> list[str]:
    """Per algo, ``preset``'s final minus ``control_preset``'s on the same seeds: arms that share
    the SFT start but differ in a preset field (TTRL's vote vs the true labels)."""
    control = {r["algo"]: r for r in records if r["preset"] == control_preset}
    pairs = [
        (f"{preset} - {control_preset} / {r['algo']}", _side(r), _side(control[r["algo"]]))
        for r in records
        if r["preset"] == preset and r["algo"] in control
    ]
    title = f"Final of {preset} minus {control_preset} on the same seeds (paired), IQM [95% CI]"
    return paired_table(title, pairs)


def training_curves(root: str, records) -> None:
    """Eval pass@1 against RL update (update 0 = the SFT start), IQM over seeds with the
    min-max band, one line per algo."""

    def draw(ax, preset, recs):
        for r in recs:
            curves = []
            for seed in r["seeds"]:
                workdir = os.path.join(root, preset, r["algo"], f"seed{seed}")
                with open(os.path.join(workdir, "start_eval.json")) as f:
                    points = {0: json.load(f)["eval/pass@1"]}
                for rec in harness.read_metrics(workdir):
                    if "eval/pass@1" in rec:
                        points[int(rec["step"])] = rec["eval/pass@1"]
                curves.append(points)
            steps = sorted(set.intersection(*(set(p) for p in curves)))
            v = np.array([[p[s] for s in steps] for p in curves])
            ax.plot(steps, [iqm(col) for col in v.T], marker="o", label=r["algo"])
            ax.fill_between(steps, v.min(0), v.max(0), alpha=0.15)

    _figures_per_preset(records, root, "curves", draw, "RL update (0 = SFT start)",
                        "eval pass@1 (IQM over seeds; band min-max)", "training curves")  # fmt: skip


def ttrl_per_seed(root: str, preset: str, algo: str, seeds, n: int) -> list[str]:
    """Markdown rows for a majority-vote (TTRL) arm, one per seed: the start's pass@1 and maj@n,
    the final pass@1, and the pseudo-label accuracy and majority agreement
    (``train/label_accuracy``, ``train/majority_ratio``) averaged over the first and the last
    ``TTRL_WINDOW`` updates: does the vote stay right while the policy learns to agree?"""
    lines = [
        "",
        f"{preset} per seed: label accuracy and agreement, mean of the first -> last "
        f"{TTRL_WINDOW} updates",
        "",
        f"| seed | start pass@1 | start maj@{n} | final pass@1 | label accuracy | agreement |",
        "|---|---|---|---|---|---|",
    ]
    for seed in seeds:
        workdir = os.path.join(root, preset, algo, f"seed{seed}")
        with open(os.path.join(workdir, "start_eval.json")) as f:
            start = json.load(f)
        with open(os.path.join(workdir, "summary.json")) as f:
            final = json.load(f)["final_metrics"]
        recs = [r for r in harness.read_metrics(workdir) if "train/label_accuracy" in r]

        def first_last(key):
            v = [r[key] for r in recs]
            return f"{np.mean(v[:TTRL_WINDOW]):.2f} -> {np.mean(v[-TTRL_WINDOW:]):.2f}"

        lines.append(
            f"| {seed} | {start['eval/pass@1']:.3f} | {start[f'eval/maj@{n}']:.3f} | "
            f"{final['eval/pass@1']:.3f} | {first_last('train/label_accuracy')} | "
            f"{first_last('train/majority_ratio')} |"
        )
    return lines


def _pass_at_k(metrics: dict) -> dict[int, float]:
    out = {}
    for key, v in metrics.items():
        if key.startswith("eval/pass@") and key[len("eval/pass@") :].isdigit():
            out[int(key[len("eval/pass@") :])] = v
    return dict(sorted(out.items()))


def write_table(root: str, lr: float | None = None) -> list[dict]:
    """Writes ``<root>/results.{md,json}`` and the figures; returns the per-(preset, algo)
    records."""
    rows, records, ttrl_lines = [], [], []
    for preset, algo in _runs():
        base = _config(preset, algo, 0, lr)
        name = base.rl.algo
        n = base.eval.num_samples
        cols = [c.format(n=n) for c in COLUMNS]
        cols += [f"eval/pass@1_{flowrl_trainer.temperature_tag(t)}"
                 for t in base.eval.extra_temperatures]  # fmt: skip
        if base.rl.reward == "majority_vote":
            cols += ["train/label_accuracy", "train/reward_accuracy"]
        if base.sft.until_maj > 0:  # adaptive SFT: how long each seed's start trained
            cols += [SFT_STEPS]
        pk_final, pk_start = [], []
        finals, starts, seeds = [], [], []
        for seed in map(int, FLAGS.seeds):
            workdir = os.path.join(root, preset, name, f"seed{seed}")
            path = os.path.join(workdir, "summary.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                summary = json.load(f)
            with open(os.path.join(workdir, "start_eval.json")) as f:
                start = json.load(f)
            # The SFT length belongs to the start; the final row repeats it.
            final = {**summary["final_metrics"], SFT_STEPS: start.get(SFT_STEPS, float("nan"))}
            finals.append([final[c] for c in cols])
            starts.append([start.get(c, float("nan")) for c in cols])
            pk_final.append(_pass_at_k(summary["final_metrics"]))
            pk_start.append(_pass_at_k(start))
            seeds.append(seed)
        if not finals:
            continue
        finals, starts = np.array(finals), np.array(starts)
        if base.rl.reward == "majority_vote":
            ttrl_lines += ttrl_per_seed(root, preset, name, seeds, n)
        label = f"{preset} / {name}"
        rows.append((f"{label} (SFT start)", starts, cols, seeds))
        rows.append((label, finals, cols, seeds))
        records.append(
            {
                "preset": preset,
                "algo": name,
                "seeds": seeds,
                "columns": cols,
                "final": finals.tolist(),
                "start": starts.tolist(),
                "pass_at_k": {
                    "k": list(pk_final[0]),
                    "final": [list(d.values()) for d in pk_final],
                    "start": [list(d.values()) for d in pk_start],
                },
            }
        )
    lines = []
    header = None
    for label, values, cols, seeds in rows:
        if cols != header:
            header = cols
            lines += [
                "",
                "IQM over seeds [95% bootstrap CI]",
                "",
                "| run | seeds | " + " | ".join(cols) + " |",
                "|---" * (len(cols) + 2) + "|",
            ]
        cells = [_fmt(values[:, j]) for j in range(len(cols))]
        lines.append(f"| {label} | {len(seeds)} | " + " | ".join(cells) + " |")
    lines += start_deltas(records)
    for control_algo in FLAGS.paired_with:
        lines += paired_deltas(records, control_algo)
    for pair in FLAGS.paired_presets:
        lines += preset_deltas(records, *pair.split(":"))
    lines += ttrl_lines
    text = "\n".join(lines).strip() + "\n"
    with open(os.path.join(root, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump(records, f, indent=2)
    if records:
        pass_at_k_curves(records, root)
        training_curves(root, records)
    print(text)
    return records


def lr_sweep_table(records_by_lr: dict[float, list[dict]], metric: str = LR_METRIC) -> dict:
    """Final ``metric`` per (preset, algo) and lr: IQM [95% bootstrap CI] over the seeds every
    lr of that arm finished (so the lrs of one arm compare on the same seeds), and the best lr
    by IQM.

    Returns ``{"metric", "lrs", "rows": [{"preset", "algo", "seeds", "iqm": {lr: v},
    "cells": {lr: "v [lo, hi]"}, "best_lr"}]}`` with lrs sorted."""
    lrs = sorted(records_by_lr)
    arms: dict[tuple[str, str], dict[float, dict]] = {}
    for lr in lrs:
        for r in records_by_lr[lr]:
            arms.setdefault((r["preset"], r["algo"]), {})[lr] = r
    rows = []
    for (preset, algo), by_lr in arms.items():
        common = sorted(set.intersection(*(set(r["seeds"]) for r in by_lr.values())))
        if not common:
            continue
        iqms, cells = {}, {}
        for lr, r in by_lr.items():
            j = r["columns"].index(metric)
            v = np.array([r["final"][r["seeds"].index(s)][j] for s in common])
            iqms[lr], cells[lr] = float(iqm(v)), _fmt(v)
        best = max(iqms, key=iqms.get)
        rows.append({"preset": preset, "algo": algo, "seeds": common, "iqm": iqms,
                     "cells": cells, "best_lr": best})  # fmt: skip
    return {"metric": metric, "lrs": lrs, "rows": rows}


def write_lr_sweep(root: str, table: dict) -> str:
    """``<root>/lr_sweep.{md,json,png}`` from :func:`lr_sweep_table`; returns the markdown."""
    lrs = table["lrs"]
    lines = [
        f"Final {table['metric']} by learning rate, IQM [95% bootstrap CI] over seeds",
        "",
        "| run | seeds | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best lr |",
        "|---" * (len(lrs) + 3) + "|",
    ]
    for row in table["rows"]:
        cells = [row["cells"].get(lr, "-") for lr in lrs]
        lines.append(f"| {row['preset']} / {row['algo']} | {len(row['seeds'])} | "
                     + " | ".join(cells) + f" | {row['best_lr']:g} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    with open(os.path.join(root, "lr_sweep.md"), "w") as f:
        f.write(text)
    with open(os.path.join(root, "lr_sweep.json"), "w") as f:
        json.dump(table, f, indent=2)
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in table["rows"]:
        xs = sorted(row["iqm"])
        ax.plot(xs, [row["iqm"][x] for x in xs], marker="o", label=row["algo"])
    ax.set_xscale("log")
    ax.set_xlabel("RL learning rate")
    ax.set_ylabel(f"final {table['metric']} (IQM over seeds)")
    ax.set_title("learning-rate sweep")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(root, "lr_sweep.png"), dpi=100)
    plt.close(fig)
    return text


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for pair in FLAGS.paired_presets:
        names = pair.split(":")
        if len(names) != 2 or not set(names) <= set(FLAGS.presets):
            raise app.UsageError(
                f"--paired_presets {pair!r}: expected preset:control_preset, both in --presets"
            )
    try:
        lrs = [float(x) for x in FLAGS.lrs]
    except ValueError:
        raise app.UsageError(f"--lrs {FLAGS.lrs}: expected numbers, e.g. 1e-4,3e-4,1e-3") from None
    if any(lr <= 0 for lr in lrs):
        raise app.UsageError(f"--lrs {FLAGS.lrs}: learning rates must be > 0")
    os.makedirs(FLAGS.root, exist_ok=True)
    if not lrs:
        if not FLAGS.table_only:
            run_all(FLAGS.root)
        write_table(FLAGS.root)
        return
    records_by_lr = {}
    for lr in lrs:
        root = lr_root(FLAGS.root, lr)
        os.makedirs(root, exist_ok=True)
        if not FLAGS.table_only:
            run_all(root, lr)
        records_by_lr[lr] = write_table(root, lr)
    print(write_lr_sweep(FLAGS.root, lr_sweep_table(records_by_lr)))


if __name__ == "__main__":
    app.run(main)
