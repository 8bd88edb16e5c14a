"""FlowRL / GRPO / PPO / HPT / TTRL on verifiable synthetic tasks (FLOWRL.md §8).

    python -m experiments.flowrl --config experiments/configs/flowrl.py:smoke --workdir /tmp/flowrl
    python -m experiments.flowrl --config experiments/configs/flowrl.py:cpu \
        --config.rl.algo=grpo --config.seed=1 --workdir runs/flowrl/grpo_s1
"""

from experiments import cli
from flowrl import trainer

cli.define_flags("Experiment config (path.py:<preset>).")


def main(config, workdir: str) -> None:
    trainer.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    cli.run(__doc__, main)
