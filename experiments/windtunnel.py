"""The safety wind tunnel on a finished run (SAFETY_AND_ANALYSIS.md §1.4).

    python -m experiments.windtunnel --workdir RUN_DIR \
        [--config experiments/configs/windtunnel.py:cpu]

Loads every seed's policy of RUN_DIR (SAC/AdaRL/Parseval or PPO/RNAC, chosen by the run's
``config.json``), evaluates the robustness grid (``robust_eval.json``/``.png``) and searches the
uncertainty set for the worst dynamics (``windtunnel.json``, ``windtunnel_seed<i>.png``).
"""

import os

from adarl import windtunnel
from experiments import cli

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "windtunnel.py") + ":cpu"
cli.define_flags(
    "Wind-tunnel config (path.py:<preset>).",
    DEFAULT_CONFIG,
    workdir_help="A finished run's directory (holds config.json).",
)


def main(config, workdir: str) -> None:
    out = windtunnel.evaluate_run(workdir, config)
    print(
        f"{out['algo']}: nominal return {out['nominal_return']}, worst {out['worst_return']}, "
        f"CVaR {out['cvar']}"
    )


if __name__ == "__main__":
    cli.run(__doc__, main, default_config=DEFAULT_CONFIG, claim=False)
