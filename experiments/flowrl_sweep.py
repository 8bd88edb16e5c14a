"""Sweep over algorithms and seeds from one SFT start per seed; writes a results table.

    python -m experiments.flowrl_sweep --root /work/results/flowrl/sweep \
        --presets cpu,cpu_countdown --algos grpo,ppo,flowrl,hpt --seeds 0,1,2 [--ttrl]

Each run is ``flowrl.trainer.train_and_evaluate`` in ``<root>/<preset>/<algo>/seed<k>``; all runs
of one (preset, algo) share compiled functions (one process), and all algorithms of one seed
share the SFT start (``sft.cache_dir = <root>/sft_cache``). ``--ttrl`` adds the ``cpu_ttrl``
preset (GRPO on the unlabelled test prompts with the majority-vote reward). Finished runs are
skipped, so rerunning resumes. The table (mean +- std over seeds of the final evaluation, and the
SFT start) goes to ``<root>/results.md`` and ``<root>/results.json``.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from experiments.configs import flowrl as flowrl_configs
from flowrl import trainer as flowrl_trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("root", None, "Output root directory.")
flags.DEFINE_list("presets", ["cpu", "cpu_countdown"], "Config presets (tasks).")
flags.DEFINE_list("algos", ["grpo", "ppo", "flowrl", "hpt"], "Algorithms.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
flags.DEFINE_bool("ttrl", True, "Also run the cpu_ttrl preset (GRPO + majority vote).")
flags.DEFINE_integer("num_updates", 0, "Override rl.num_updates (0 = preset value).")
flags.DEFINE_bool("table_only", False, "Only rebuild the table from finished runs.")
flags.mark_flags_as_required(["root"])

COLUMNS = ("eval/pass@1", "eval/pass@{n}", "eval/maj@{n}", "eval/distinct_correct")


def _config(preset: str, algo: str | None, seed: int):
    c = flowrl_configs.get_config(preset)
    if algo is not None:
        c.rl.algo = algo
    c.seed = seed
    c.progress = False
    c.sft.cache_dir = os.path.join(FLAGS.root, "sft_cache")
    if FLAGS.num_updates:
        c.rl.num_updates = FLAGS.num_updates
    return c


def _runs():
    for preset in FLAGS.presets:
        for algo in FLAGS.algos:
            yield preset, algo
    if FLAGS.ttrl:
        yield "cpu_ttrl", None


def run_all() -> None:
    for preset, algo in _runs():
        trainer = None
        for seed in map(int, FLAGS.seeds):
            config = _config(preset, algo, seed)
            workdir = os.path.join(FLAGS.root, preset, config.rl.algo, f"seed{seed}")
            if os.path.exists(os.path.join(workdir, "summary.json")):
                continue
            if trainer is None:
                trainer = flowrl_trainer.build(config)
            print(f"== {preset} {config.rl.algo} seed {seed} -> {workdir}", flush=True)
            flowrl_trainer.train_and_evaluate(config, workdir, trainer=trainer)


def _fmt(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std():.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def write_table() -> None:
    rows, records = [], []
    for preset, algo in _runs():
        name = "grpo" if algo is None else algo
        n = flowrl_configs.get_config(preset).eval.num_samples
        cols = [c.format(n=n) for c in COLUMNS]
        finals, starts, seeds = [], [], []
        for seed in map(int, FLAGS.seeds):
            workdir = os.path.join(FLAGS.root, preset, name, f"seed{seed}")
            path = os.path.join(workdir, "summary.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                summary = json.load(f)
            with open(os.path.join(workdir, "start_eval.json")) as f:
                start = json.load(f)
            finals.append([summary["final_metrics"][c] for c in cols])
            starts.append([start[c] for c in cols])
            seeds.append(seed)
        if not finals:
            continue
        finals, starts = np.array(finals), np.array(starts)
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
            }
        )
    lines = []
    header = None
    for label, values, cols, seeds in rows:
        if cols != header:
            header = cols
            lines += [
                "",
                "| run | seeds | " + " | ".join(cols) + " |",
                "|---" * (len(cols) + 2) + "|",
            ]
        cells = [_fmt(values[:, j]) for j in range(len(cols))]
        lines.append(f"| {label} | {len(seeds)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines).strip() + "\n"
    with open(os.path.join(FLAGS.root, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(FLAGS.root, "results.json"), "w") as f:
        json.dump(records, f, indent=2)
    print(text)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    os.makedirs(FLAGS.root, exist_ok=True)
    if not FLAGS.table_only:
        run_all()
    write_table()


if __name__ == "__main__":
    app.run(main)
