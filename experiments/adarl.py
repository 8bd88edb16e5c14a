"""SAC / AdaRL / Parseval on MJX tasks with randomised dynamics (ADARL.md).

    python -m experiments.adarl --config experiments/configs/adarl.py:cpu --workdir /tmp/adarl_cpu
    python -m experiments.adarl --config experiments/configs/adarl.py:cpu --config.algo=sac ...

Outputs in ``--workdir``: metrics.jsonl, TensorBoard, checkpoints (resume by rerunning),
summary.json, return/rank/loss plots, spectra.jsonl + spectrum.png, robustness.json/.png.
"""

from adarl import train
from experiments import cli

cli.define_flags("Experiment config (path.py:<preset>).")


def main(config, workdir: str) -> None:
    summary = train.train_and_evaluate(config, workdir)
    rob = summary.get("robustness", {})
    if rob:
        print(f"robustness: nominal {rob['nominal']}, grid mean {rob['grid_mean']}")


if __name__ == "__main__":
    cli.run(__doc__, main, resolve=train.resolve_config)
