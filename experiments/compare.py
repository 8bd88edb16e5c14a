"""One table over algorithms × seeds: nominal return, mean and worst-10% CVaR over the
perturbation grid, the wind-tunnel worst case, the actor's final rank and the wall time, each as
IQM with a 95% bootstrap CI and mean ± std over seeds (``adarl.robust_eval.METRICS``), and the
arms' figures side by side (``--plots``: return curves with truncation markers, rank curves,
robustness heat maps; ``adarl.arm_plots``).

    python -m experiments.compare --out /work/results/compare_cpu \
        --run /work/results/adarl/cpu_sac --run /work/results/adarl/cpu_adarl \
        --run rnac_ds=/work/results/rnac/cpu_rnac_ds [--evaluate]

``--run [label=]DIR[,DIR...]``: run directories (one per process; each may hold several vmapped
seeds); the label defaults to the ``algo`` of the run's ``config.json``. ``--evaluate`` first runs
the wind tunnel (grid + search, ``experiments/configs/windtunnel.py``) on directories that lack
``windtunnel.json``. The grid columns come from the wind tunnel's ``robust_eval.json`` when it
exists, else from the trainer's own end-of-run ``robustness.json``.
"""

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from adarl import arm_plots, checkpoints, robust_eval, windtunnel

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("run", [], "[label=]DIR[,DIR...] run directories.")
flags.DEFINE_string("out", None, "Directory for compare.json and compare.md.")
flags.DEFINE_bool("evaluate", False, "Run the wind tunnel where windtunnel.json is missing.")
flags.DEFINE_integer("bootstrap_reps", 2000, "Bootstrap resamples.")
flags.DEFINE_bool("plots", True, "Also write returns.png, ranks.png and heatmaps.png.")
flags.DEFINE_bool("allow_missing", False, "Tabulate runs that lack some files (cells say n/a).")
config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(__file__), "configs", "windtunnel.py") + ":cpu",
    "Wind-tunnel config used with --evaluate.",
    lock_config=True,
)
flags.mark_flags_as_required(["out"])


def parse_runs(specs):
    runs: dict[str, list[str]] = {}
    for spec in specs:
        label, _, dirs = spec.rpartition("=")
        for d in dirs.split(","):
            name = label or checkpoints.read_config(d).get("algo", os.path.basename(d))
            runs.setdefault(name, []).append(d)
    return runs


def main(argv):
    del argv
    runs = parse_runs(FLAGS.run)
    if not runs:
        raise app.UsageError("give at least one --run")
    if FLAGS.evaluate:
        for dirs in runs.values():
            for d in dirs:
                if not os.path.exists(os.path.join(d, windtunnel.WINDTUNNEL_FILE)):
                    windtunnel.evaluate_run(d, FLAGS.config)
    absent = robust_eval.missing(runs)
    if absent and not FLAGS.allow_missing:
        print(
            "error: runs lack the files the table needs:\n  "
            + "\n  ".join(absent)
            + "\nrun `python -m experiments.windtunnel --workdir DIR` on them (or pass --evaluate),"
            " or pass --allow_missing to tabulate what is there",
            file=sys.stderr,
        )
        sys.exit(2)
    rows, table = robust_eval.compare(runs, reps=FLAGS.bootstrap_reps)
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, "compare.json"), "w") as f:
        json.dump({"runs": runs, "rows": rows}, f, indent=2)
    with open(os.path.join(FLAGS.out, "compare.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    if FLAGS.plots:
        written = [
            arm_plots.plot_return_curves(runs, os.path.join(FLAGS.out, "returns.png")),
            arm_plots.plot_rank_curves(runs, os.path.join(FLAGS.out, "ranks.png")),
            arm_plots.plot_heatmaps(runs, os.path.join(FLAGS.out, "heatmaps.png")),
        ]
        print("wrote " + ", ".join(p for p in written if p))


if __name__ == "__main__":
    app.run(main)
