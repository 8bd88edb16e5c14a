"""Sweep-to-hypothesis pipeline over recorded run directories (issue 20; SAFETY_AND_ANALYSIS.md §2).

    python -m experiments.hypotheses --runs results/adarl results/flowrl results/ssm \
        --exclude '*/cpu_recheck' --out results/hypotheses [--replicate --budget 2 [--dry_run]]

Each ``--runs DIR`` is one sweep (one BH family). Writes ``report.md``/``report.html``,
``summary.json`` (the command, its git commit and wall time), per sweep
``<name>_graph.json``/``.graphml``, ``<name>_relations.json`` (every test),
``<name>_hypotheses.json`` (ranked, with validations), forest and graph PNGs, and
``<name>_next_sweep.py`` (a config file for ``--config``) plus ``.json`` with the commands. A sweep
whose tests take more than ``--gzip_over_mb`` as JSON (thousands of tests, each naming its runs)
has its four data files written gzip-compressed (``.json.gz``, ``.graphml.gz``);
``--prior_graphs`` reads either. ``--replicate`` launches (or with ``--dry_run`` prints) at most
``--budget`` runs of the proposed sweep through the existing entry points, each bounded by
``--run_timeout`` seconds.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time

from harness.workdir import git_info
from hypotheses import PRIOR_PATH, analyze, graph, load, pipeline, report, score

CONFIG_MODULES = ("adarl", "rnac", "flowrl", "ssm", "coevolve", "windtunnel")
SWEEP_TABLE_EXPERIMENT = "flowrl"  # results.json sweep tables come from experiments.flowrl_sweep


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--runs", nargs="+", required=True, help="sweep directories (one BH family each)"
    )
    p.add_argument("--out", required=True)
    p.add_argument(
        "--exclude", nargs="*", default=[], metavar="GLOB",
        help="skip run directories and files whose path (as walked from a --runs DIR) matches "
        "one of these fnmatch patterns, and everything below them, e.g. '*/cpu_recheck'",
    )  # fmt: skip
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--permutations", type=int, default=2000)
    p.add_argument("--split", choices=("auto", "seeds", "task", "none"), default="auto")
    p.add_argument("--holdout", type=float, default=0.4, help="held-out seed fraction per cell")
    p.add_argument("--final_k", type=int, default=3, help="final-k mean over logged updates")
    p.add_argument("--prior", default=PRIOR_PATH, help="expectations JSON")
    p.add_argument("--prior_graphs", nargs="*", default=[], help="earlier sweeps' graph JSON")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--replicate", action="store_true", help="run the proposed validation sweep")
    p.add_argument("--budget", type=int, default=2, help="max runs launched by --replicate")
    p.add_argument("--run_timeout", type=int, default=1800, help="seconds per launched run")
    p.add_argument("--dry_run", action="store_true", help="print --replicate commands only")
    p.add_argument("--gzip_over_mb", type=float, default=2.0,
                   help="gzip a sweep's JSON/GraphML files when its tests exceed this (MB)")  # fmt: skip
    return p.parse_args(argv)


MIN_SHARED_KEYS = 0.8  # fraction of a template run's config keys a matched preset must have


def _flat_preset(module: str, preset: str) -> dict:
    cfg = importlib.import_module(f"experiments.configs.{module}").get_config(preset)
    return load.flatten(json.loads(cfg.to_json()))


def resolve_template(run_dir: str, cell: dict) -> tuple[str, str, dict]:
    """(experiment module, preset, overrides) reproducing a template run with ``cell`` set.

    A harness run directory is matched to the preset of ``experiments/configs/<module>.py``
    nearest to it: fewest keys on one side only, then fewest differing values. A run recorded
    before its config gained (or lost) fields still matches: a field it lacks keeps the preset's
    value, a field the preset no longer has is dropped; at least ``MIN_SHARED_KEYS`` of the run's
    keys must be the preset's. A sweep table row (``preset``, ``algo``) maps to
    ``experiments/configs/flowrl.py:<preset>`` with ``rl.algo``."""
    if os.path.isfile(run_dir):
        preset = cell.get("preset", "cpu")
        return SWEEP_TABLE_EXPERIMENT, preset, {"rl.algo": cell["algo"]} if "algo" in cell else {}
    with open(os.path.join(run_dir, "config.json")) as f:
        run = load.flatten(json.load(f))
    best, best_rank = None, None
    for module in CONFIG_MODULES:
        presets = importlib.import_module(f"experiments.configs.{module}").PRESETS
        for preset in presets:
            ref = _flat_preset(module, preset)
            shared = set(ref) & set(run)
            if len(shared) < MIN_SHARED_KEYS * len(run):
                continue
            diff = {k: run[k] for k in sorted(shared) if run[k] != ref[k] and k != "seed"}
            rank = (len(set(ref) ^ set(run)), len(diff))
            if best_rank is None or rank < best_rank:
                best, best_rank = (module, preset, diff, shared), rank
    if best is None:
        raise ValueError(f"no experiments/configs preset has the keys of {run_dir}/config.json")
    module, preset, diff, shared = best
    return module, preset, diff | {k: v for k, v in cell.items() if k in shared}


def next_sweep_cells(proposal: score.Proposal) -> dict[str, tuple[str, str, dict]]:
    cells = {}
    for i, (cell, run_dir) in enumerate(zip(proposal.cells, proposal.template_runs, strict=True)):
        module, preset, overrides = resolve_template(run_dir, cell)
        for seed in proposal.seeds:
            cells[f"cell{i}_seed{seed}"] = (module, preset, overrides | {"seed": seed})
    return cells


CONFIG_FILE = '''"""Next sweep proposed by experiments.hypotheses ({reason}).

    python -m experiments.{module} --config {path}:<cell> --workdir DIR
cells: {names}
"""

import importlib
import json

# cell name -> [experiment module, preset, {{dotted field: value}}]
CELLS = json.loads(
    """
{cells}
"""
)


def get_config(cell):
    module, preset, overrides = CELLS[cell]
    c = importlib.import_module("experiments.configs." + module).get_config(preset)
    for dotted, value in overrides.items():
        *path, leaf = dotted.split(".")
        node = c
        for part in path:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"config field {{dotted!r}} does not exist in {{module}}:{{preset}}")
        node[leaf] = tuple(value) if isinstance(node[leaf], tuple) else value
    return c
'''


def write_next_sweep(proposal: score.Proposal, path: str, workroot: str) -> dict:
    """Writes the config file and returns the JSON record with one command per cell."""
    cells = next_sweep_cells(proposal)
    module = next(iter(cells.values()))[0]
    with open(path, "w") as f:
        f.write(CONFIG_FILE.format(reason=proposal.reason, module=module, path=path,
                                   names=", ".join(cells), cells=json.dumps(cells, indent=1)))  # fmt: skip
    commands = [
        [
            sys.executable,
            "-m",
            f"experiments.{m}",
            "--config",
            f"{path}:{name}",
            "--workdir",
            os.path.join(workroot, name),
        ]  # fmt: skip
        for name, (m, _, _) in cells.items()
    ]
    return {"hypothesis": proposal.hypothesis, "reason": proposal.reason, "cells": cells,
            "commands": commands}  # fmt: skip


def load_config_file(path: str):
    spec = importlib.util.spec_from_file_location("next_sweep", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def launch(commands: list[list[str]], budget: int, timeout: int, dry_run: bool) -> list[dict]:
    """Runs at most ``budget`` commands (each bounded by ``timeout`` s); dry run prints them."""
    done = []
    for cmd in commands[:budget]:
        print(" ".join(cmd))
        if dry_run:
            done.append({"command": cmd, "returncode": None})
            continue
        rc = subprocess.run(cmd, timeout=timeout, check=False).returncode
        done.append({"command": cmd, "returncode": rc})
    return done


def read_text(path: str) -> str:
    """A file this command wrote, gzip-compressed (``.gz``) or not."""
    with gzip.open(path, "rt") if path.endswith(".gz") else open(path) as f:
        return f.read()


def write_sweep(res: pipeline.SweepResult, out: str, args) -> None:
    name = res.sweep.name
    relations = json.dumps([r.to_dict() for r in res.relations])  # every test; compact: it is long
    gz = ".gz" if len(relations) > args.gzip_over_mb * 1e6 else ""

    def write(suffix: str, text: str) -> None:
        path = os.path.join(out, f"{name}_{suffix}{gz}")
        with gzip.open(path, "wt") if gz else open(path, "w") as f:
            f.write(text)

    write("graph.json", graph.to_json(res.graph))
    graph.write_graphml(res.graph, os.path.join(out, f"{name}_graph.graphml{gz}"))  # by suffix
    write("relations.json", relations)
    write("hypotheses.json", json.dumps(pipeline.hypotheses_json(res.hypotheses), indent=1))
    if res.proposal is None:
        return
    record = write_next_sweep(res.proposal, os.path.join(out, f"{name}_next_sweep.py"),
                              os.path.join(out, "replicate", name))  # fmt: skip
    if args.replicate:
        record["launched"] = launch(record["commands"], args.budget, args.run_timeout, args.dry_run)
    with open(os.path.join(out, f"{name}_next_sweep.json"), "w") as f:
        json.dump(record, f, indent=1)


def main(argv=None) -> list[pipeline.SweepResult]:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    code, t0 = git_info(), time.time()  # now: the checkout may move on while the sweeps run
    cfg = analyze.AnalysisConfig(alpha=args.alpha, reps=args.reps, permutations=args.permutations)
    prior = score.load_prior(args.prior)
    for path in args.prior_graphs:
        prior += score.prior_from_graph(read_text(path))
    results, sections = [], []
    sweeps = (s for root in args.runs for s in load.load_sweeps(root, args.final_k, args.exclude))
    for sweep in sweeps:
        res = pipeline.run_sweep(sweep, cfg, prior, args.split, args.holdout)
        write_sweep(res, args.out, args)
        sections += report.sweep_sections(res, args.out, args.top)
        results.append(res)
        print(f"{sweep.name}: {len(res.relations)} tests, {len(res.hypotheses)} hypotheses")
    cmd = "python -m experiments.hypotheses --runs " + " ".join(args.runs) + f" --out {args.out}"
    if args.exclude:
        cmd += " --exclude " + " ".join(f"'{p}'" for p in args.exclude)
    sections.insert(0, ("Command", cmd, None, None))
    report.render(sections, args.out, "Hypotheses from recorded sweeps")
    summary = {"command": cmd, "git": code, "wall_time_s": round(time.time() - t0, 1),
               "sweeps": {r.sweep.name: {"tests": len(r.relations), "hypotheses": len(r.hypotheses)}
                          for r in results}}  # fmt: skip
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)  # the commit that made every file here (label_results)
    return results


if __name__ == "__main__":
    main()
