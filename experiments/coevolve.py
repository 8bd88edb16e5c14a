"""Coevolution of a PPO/RNAC policy and the safety wind tunnel (SAFETY_AND_ANALYSIS.md §1.6).

    python -m experiments.coevolve --config experiments/configs/coevolve.py:cpu --workdir DIR

Writes ``coevolve.json`` (rounds, gate decisions, failure bank), ``coevolve_rounds.jsonl`` (the
rounds log), ``checkpoints/<round>`` and ``coevolve.png`` into ``--workdir``. Rerunning the same
command resumes after the last finished round; a finished workdir is reported, not recomputed.
"""

from adarl import coevolve
from experiments import cli

cli.define_flags("Experiment config (path.py:<preset>).")


def main(config, workdir: str) -> None:
    out = coevolve.train_and_coevolve(config, workdir)
    print(f"accepted rounds {out['accepted_rounds']}, failure bank {len(out['bank']['severity'])}")


if __name__ == "__main__":
    cli.run(__doc__, main)
