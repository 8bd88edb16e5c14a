"""Labels every recorded result under ``results/`` with the commit that made it.

    python -m experiments.label_results [--root results] [--check]

For each JSON object file the commit is the run's own ``git.commit`` where ``summary.json``
recorded it (harness runs since issue 22), else the ``commit`` an aggregated ``table.json``
recorded (``experiments.ssm_table``: the code that aggregated it, which a later
``--aggregate_only`` changes), else the commit that added the file
(``git log --follow --diff-filter=A``): the code that made it is that commit or an earlier one.
The commit is written into the file as ``"made_at_commit"`` (with ``"made_at_source"`` saying
which rule gave it) and every results folder is listed with its commit in
``results/PROVENANCE.md``. JSON list files (hypothesis tables) and configs (``config.json``,
``*next_sweep.json``: read back as configs) are listed there only. Markdown tables in the
folders get a closing "Made at commit X" line.
``--check`` exits 1 if any file lacks its label (nothing is written).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ADDED = (
    "added to the repository at this commit (git log --diff-filter=A); "
    "the run's own commit was not recorded"
)
# Configs are read back as ConfigDicts (and compared with a rerun's): never written to.
CONFIG_SUFFIXES = ("config.json", "next_sweep.json")
RUN = "the run's summary.json git.commit (the code that ran)"
TABLE = "the table.json commit (the code that aggregated the table; its runs name theirs)"
MADE_AT = "_Made at commit "  # the closing line of a labelled markdown table


def added_commit(path: str) -> str:
    """Full hash of the commit that first added ``path`` (following renames)."""
    out = subprocess.run(
        ["git", "log", "--follow", "--diff-filter=A", "--format=%H", "--", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not out:
        raise ValueError(f"{path} is not committed; commit it before labelling")
    return out[-1]


def _with_dirty(commit: str | None, dirty: bool) -> str | None:
    return f"{commit}+dirty" if commit and dirty else commit


def run_commit(folder: str) -> str | None:
    """``git.commit`` of the ``summary.json`` in ``folder`` (None if absent)."""
    path = os.path.join(folder, "summary.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        git = json.load(f).get("git") or {}
    return _with_dirty(git.get("commit"), bool(git.get("dirty")))


def table_commit(folder: str) -> str | None:
    """``commit`` of an aggregated ``table.json`` in ``folder`` (None if absent)."""
    path = os.path.join(folder, "table.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("commit"), str):
        return None
    return _with_dirty(data["commit"], bool(data.get("dirty")))


def label(path: str) -> tuple[str, str]:
    """(commit, source rule) for one results file."""
    folder = os.path.dirname(path)
    if commit := run_commit(folder):
        return commit, RUN
    if commit := table_commit(folder):
        return commit, TABLE
    return added_commit(path), ADDED


def _indent(text: str) -> int | None:
    """The indent of a JSON text (kept so that labelling changes only the added lines)."""
    lines = text.splitlines()
    if len(lines) < 2:
        return None
    return len(lines[1]) - len(lines[1].lstrip(" "))


def _short(commit: str) -> str:
    return commit[:7] + ("+dirty" if commit.endswith("+dirty") else "")


def _label_markdown(path: str, write: bool) -> bool:
    """Ends a results table with "Made at commit X", replacing an older such line; True if it
    was missing or named another commit."""
    commit, source = label(path)
    with open(path) as f:
        text = f.read()
    line = f"{MADE_AT}{_short(commit)} ({source})._"
    if line in text.splitlines():
        return False
    if write:
        kept = [x for x in text.rstrip("\n").splitlines() if not x.startswith(MADE_AT)]
        while kept and not kept[-1].strip():
            kept.pop()
        with open(path, "w") as f:
            f.write("\n".join(kept) + f"\n\n{line}\n")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="results")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    folders: dict[str, set[str]] = {}
    unlabelled = []
    for dirpath, _, names in sorted(os.walk(args.root)):
        tables = [os.path.join(dirpath, n) for n in sorted(names) if n.endswith(".md")]
        if dirpath != args.root:  # the root holds this index and README, not results
            unlabelled += [p for p in tables if _label_markdown(p, write=not args.check)]
        for name in sorted(n for n in names if n.endswith(".json")):
            path = os.path.join(dirpath, name)
            commit, source = label(path)
            folders.setdefault(dirpath, set()).add(commit)
            with open(path) as f:
                text = f.read()
            data = json.loads(text)
            skip = not isinstance(data, dict) or name.endswith(CONFIG_SUFFIXES)
            if skip or data.get("made_at_commit") == commit:
                continue
            unlabelled.append(path)
            if not args.check:
                data.update(made_at_commit=commit, made_at_source=source)
                with open(path, "w") as f:
                    f.write(json.dumps(data, indent=_indent(text)) + text[len(text.rstrip()) :])
    if args.check:
        print("\n".join(f"unlabelled: {p}" for p in unlabelled) or "all labelled")
        return 1 if unlabelled else 0
    rows = [f"| `{d}/` | {', '.join(_short(c) for c in sorted(cs))} |" for d, cs in folders.items()]
    with open(os.path.join(args.root, "PROVENANCE.md"), "w") as f:
        f.write(
            "# Commit of every recorded result\n\n"
            "Written by `python -m experiments.label_results`. A commit is the run's own\n"
            "`summary.json` `git.commit` where recorded (`+dirty`: uncommitted edits), else an\n"
            "aggregated `table.json`'s `commit` (the code that aggregated it), else the commit\n"
            "that added the files: the code that made them is that commit or earlier.\n"
            "Numbers made before the current HEAD may not reproduce exactly at HEAD.\n\n"
            "| folder | made at commit |\n|---|---|\n" + "\n".join(rows) + "\n"
        )
    print(f"labelled {len(unlabelled)} files; wrote {args.root}/PROVENANCE.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
