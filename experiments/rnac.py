"""PPO / RNAC-DS / RNAC-IPM end to end (ADARL.md §7.3).

    python -m experiments.rnac --config experiments/configs/rnac.py:cpu \
        --config.algo=rnac_ds --workdir /tmp/rnac_ds

Writes the harness's outputs (metrics.jsonl, TensorBoard, checkpoints, summary.json, return.png)
to ``--workdir``; rerunning resumes. Evaluate the finished run with
``python -m experiments.windtunnel --workdir <dir>``.
"""

from adarl import rnac
from experiments import cli

cli.define_flags("Experiment config (path.py:<preset>).")


def main(config, workdir: str) -> None:
    rnac.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    cli.run(__doc__, main)
