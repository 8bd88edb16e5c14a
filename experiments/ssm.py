"""Trains an ``ssm`` language model on a synthetic task.

    python -m experiments.ssm --config experiments/configs/ssm.py:selective_copying \
        --workdir /tmp/ssm_sc [--config.model.layer=s4d]
"""

from absl import app, flags
from ml_collections import config_flags

from ssm import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config (file.py:preset).",
                                lock_config=True)  # fmt: skip
flags.DEFINE_string("workdir", None, "Output directory (reused to resume).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
