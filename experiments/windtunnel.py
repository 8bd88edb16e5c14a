"""The safety wind tunnel on a finished run (SAFETY_AND_ANALYSIS.md §1.4).

    python -m experiments.windtunnel --workdir RUN_DIR \
        [--config experiments/configs/windtunnel.py:cpu]

Loads every seed's policy of RUN_DIR (SAC/AdaRL/Parseval or PPO/RNAC, chosen by the run's
``config.json``), evaluates the robustness grid (``robust_eval.json``/``.png``) and searches the
uncertainty set for the worst dynamics (``windtunnel.json``, ``windtunnel_seed<i>.png``). With
``--config.shield_report=True`` it then runs the same episodes with and without the shield on the
nominal model and each seed's worst cases (the verifier's models) and adds the violation,
intervention and call rates to ``windtunnel.json`` (``shield`` section).
"""

import os

from adarl import shield_eval, windtunnel
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
    if config.shield_report:
        print(shield_eval.windtunnel_report(workdir, config.shield)["markdown"])


if __name__ == "__main__":
    cli.run(__doc__, main, default_config=DEFAULT_CONFIG, claim=False)
