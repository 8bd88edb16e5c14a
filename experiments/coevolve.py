"""Coevolution of a PPO/RNAC policy and the safety wind tunnel (SAFETY_AND_ANALYSIS.md §1.6).

    python -m experiments.coevolve --config experiments/configs/coevolve.py:cpu --workdir DIR

Writes ``coevolve.json`` (rounds, gate decisions, failure bank), ``coevolve_rounds.jsonl`` and
``coevolve.png`` into ``--workdir``.
"""

from absl import app, flags
from ml_collections import config_flags

from adarl import coevolve

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Output directory.")
config_flags.DEFINE_config_file("config", None, "Config file (path.py:<preset>).", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    out = coevolve.train_and_coevolve(FLAGS.config, FLAGS.workdir)
    print({"accepted_rounds": out["accepted_rounds"], "bank_size": len(out["bank"]["severity"])})


if __name__ == "__main__":
    app.run(main)
