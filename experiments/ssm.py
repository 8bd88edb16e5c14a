"""Trains an ``ssm`` language model on a synthetic task (SSM.md §8).

    python -m experiments.ssm --config experiments/configs/ssm.py:selective_copying \
        --workdir /tmp/ssm_sc [--config.model.layer=s4d]
"""

from experiments import cli
from ssm import train

cli.define_flags("Experiment config (path.py:<preset>).")


def main(config, workdir: str) -> None:
    train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    cli.run(__doc__, main)
