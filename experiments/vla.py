"""SimpleVLA-RL at CPU scale: SFT on expert demonstrations, then outcome-only RL (issue 18).

    python -m experiments.vla --config experiments/configs/vla.py:smoke --workdir /tmp/vla_smoke
    python -m experiments.vla --config experiments/configs/vla.py:cpu --workdir /tmp/vla_cpu \
        [--config.rl.temperature=1.0]
"""

from experiments import cli
from vla import train

cli.define_flags("Experiment config (path.py:<preset>).")


def main(config, workdir: str) -> None:
    train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    cli.run(__doc__, main)
