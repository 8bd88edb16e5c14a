"""OPERA / MAPGRPO on a synthetic multi-hop QA world (FLOWRL.md §7; arXiv 2508.16438).

    python -m experiments.opera --config experiments/configs/opera.py:smoke --workdir /tmp/opera
    python -m experiments.opera --config experiments/configs/opera.py:cpu --config.seed=1 \
        --workdir results/opera/s1
"""

from absl import app, flags
from ml_collections import config_flags

from opera import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Output directory (reused to resume).")
config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    final = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    for arm, metrics in final.items():
        shown = {k[5:]: round(v, 3) for k, v in metrics.items() if k.startswith("eval/")}
        print(arm, shown)


if __name__ == "__main__":
    app.run(main)
