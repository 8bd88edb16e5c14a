"""PPO / RNAC-DS / RNAC-IPM end to end (ADARL.md §7.3).

    python -m experiments.rnac --config experiments/configs/rnac.py:cpu \
        --config.algo=rnac_ds --workdir /tmp/rnac_ds

Writes the experiment harness's outputs (metrics.jsonl, TensorBoard, checkpoints, summary.json,
return.png) to ``--workdir``; rerunning resumes. Evaluate the finished run with
``python -m experiments.windtunnel --workdir <dir>``.
"""

from absl import app, flags
from ml_collections import config_flags

from adarl import rnac

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for metrics, checkpoints and plots.")
config_flags.DEFINE_config_file("config", None, "Config file (path.py:<preset>).", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    summary = rnac.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    print({k: v for k, v in summary.get("final_metrics", {}).items() if "/std" not in k})


if __name__ == "__main__":
    app.run(main)
