"""SAC / AdaRL / Parseval on MJX tasks with randomised dynamics (issue 6; ADARL.md).

    python -m experiments.adarl --config experiments/configs/adarl.py:cpu --workdir /tmp/adarl_cpu
    python -m experiments.adarl --config experiments/configs/adarl.py:cpu --config.algo=sac ...

Outputs in ``--workdir``: metrics.jsonl, TensorBoard, checkpoints (resume by rerunning),
summary.json, return/rank/loss plots, spectra.jsonl + spectrum.png, robustness.json/.png.
"""

from absl import app, flags
from ml_collections import config_flags

from adarl import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for metrics, checkpoints and plots.")
config_flags.DEFINE_config_file("config", None, "Config file (path.py:preset).", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    print({k: summary[k] for k in ("final_metrics", "robustness") if k in summary})


if __name__ == "__main__":
    app.run(main)
