"""EM/F1 table (IQM, 95% bootstrap CI over seeds) of OPERA runs, and EM after each evaluation
step of the RL arms (per-stage gains when ``eval_every`` equals the stage length).

    python -m experiments.opera_report results/opera/s0 results/opera/s1 ...
"""

import os
import sys

from opera import stats

RL_ARMS = ("mapgrpo", "no_gold", "no_rewrite", "single")


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m experiments.opera_report RUN_DIR [RUN_DIR ...]")
    print(stats.table(argv))
    arms = [a for a in RL_ARMS if all(os.path.exists(os.path.join(d, a, "metrics.jsonl"))
                                      for d in argv)]  # fmt: skip
    if arms:
        print()
        print(stats.stage_table(argv, arms))


if __name__ == "__main__":
    main(sys.argv[1:])
