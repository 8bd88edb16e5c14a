"""EM/F1 table (IQM, 95% bootstrap CI over seeds) of OPERA runs.

python -m experiments.opera_report results/opera/s0 results/opera/s1 ...
"""

import sys

from opera import stats


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m experiments.opera_report RUN_DIR [RUN_DIR ...]")
    print(stats.table(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
