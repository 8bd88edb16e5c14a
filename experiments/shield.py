"""Shielded vs unshielded policies of a finished run (SAFETY_AND_ANALYSIS.md §1.5).

    python -m experiments.shield --workdir RUN_DIR [--config experiments/configs/shield.py:cpu]

Loads every seed's policy of RUN_DIR, fits a safety critic per seed, and runs the same episodes
with and without the shield (critic + model-predictive verifier) under the nominal model, the
wind tunnel's worst case (``windtunnel.json``, from ``python -m experiments.windtunnel``) and the
robustness grid. Writes ``shield.json`` (metrics per seed and condition, IQM table) into RUN_DIR.
"""

import os

from adarl import shield_eval
from experiments import cli

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "shield.py") + ":cpu"
cli.define_flags(
    "Shield config (path.py:<preset>).",
    DEFAULT_CONFIG,
    workdir_help="A finished run's directory (holds config.json).",
)


def main(config, workdir: str) -> None:
    out = shield_eval.evaluate_run(workdir, config)
    print(out["markdown"])


if __name__ == "__main__":
    cli.run(__doc__, main, default_config=DEFAULT_CONFIG, claim=False)
