"""OPERA / MAPGRPO on a synthetic multi-hop QA world (FLOWRL.md §7; arXiv 2508.16438).

    python -m experiments.opera --config experiments/configs/opera.py:smoke --workdir /tmp/opera
    python -m experiments.opera --config experiments/configs/opera.py:cpu --config.seed=1 \
        --workdir results/opera/s1

Every arm of one seed runs in ``--workdir`` (one sub-directory per arm, each a harness run);
``results.json`` holds the final evaluation of each arm.
"""

from experiments import cli
from opera import train

cli.define_flags("Experiment config (path.py:<preset>).")


def main(config, workdir: str) -> None:
    final = train.train_and_evaluate(config, workdir)
    for arm, metrics in final.items():
        shown = {k[5:]: round(v, 3) for k, v in metrics.items() if k.startswith("eval/")}
        print(arm, shown)


if __name__ == "__main__":
    cli.run(__doc__, main)
