"""The safety wind tunnel on a finished run (SAFETY_AND_ANALYSIS.md §1.4).

    python -m experiments.windtunnel --workdir RUN_DIR \
        [--config experiments/configs/windtunnel.py:cpu]

Loads every seed's policy of RUN_DIR (SAC/AdaRL/Parseval or PPO/RNAC, chosen by the run's
``config.json``), evaluates the robustness grid (``robust_eval.json``/``.png``) and searches the
uncertainty set for the worst dynamics (``windtunnel.json``, ``windtunnel_seed<i>.png``).
"""

import os

from absl import app, flags
from ml_collections import config_flags

from adarl import windtunnel

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A finished run's directory (holds config.json).")
config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(__file__), "configs", "windtunnel.py") + ":cpu",
    "Wind-tunnel config (path.py:<preset>).",
    lock_config=True,
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    out = windtunnel.evaluate_run(FLAGS.workdir, FLAGS.config)
    print({k: out[k] for k in ("algo", "nominal_return", "worst_return", "cvar")})


if __name__ == "__main__":
    app.run(main)
