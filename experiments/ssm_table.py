"""The synthetic-task table over seeds (issue 24): runs every (preset, seed) of ``experiments.ssm``
in a pool of parallel processes, then writes IQM with 95% bootstrap CIs, curves and a verdict.

    python -m experiments.ssm_table --rows all --seeds 0,1,2,3,4 --workers 12 \
        --out results/ssm/table [--steps_scale 0.01] [--budget_s 240 --deadline_s 330]
    python -m experiments.ssm_table --rows all --out results/ssm/table --aggregate_only

(``--steps-scale``-style dashes in flag names are accepted too.)

Each run is ``python -m experiments.ssm --config experiments/configs/ssm.py:<preset>
--config.seed=<k> --workdir <out>/runs/<preset>/seed<k>`` (plus the ``--steps_scale`` and ``--set``
overrides), in its own process with ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` and
``XLA_PYTHON_CLIENT_MEM_FRACTION`` = 0.9 / workers, so that ``--workers`` processes share one GPU,
and one persistent compilation cache (``<out>/jax_cache``) so that later seeds of a preset skip
most of the compile. Runs are launched in priority order (selective copying, induction heads,
MQAR, ListOps; within a group seed by seed, so an early stop leaves whole seeds of every row).

* A run that fails or exceeds ``--timeout_s`` is recorded and the sweep goes on; runs not started
  by ``--budget_s`` seconds are recorded as skipped; ``--deadline_s`` kills what still runs.
* ``<out>/runs.jsonl`` gets one line per run as it ends (status, return code, wall time, command,
  the end of its log; full logs in ``<out>/logs/``). A finished workdir (``summary.json``) is
  not rerun, so the same command resumes.
* Then ``<out>/table.json``, ``<out>/table.md`` and one ``<out>/<group>.png`` per task: per row
  the IQM and 95% percentile-bootstrap CI over seeds of each final held-out metric
  (:func:`harness.stats.iqm` / :func:`harness.stats.bootstrap_ci`), the per-seed values, the
  task's baseline (:class:`ssm.tasks.Baseline`: chance, MQAR's elimination guess, ListOps'
  majority answer), a verdict sentence against the published claim and the baseline, how far
  each seed's curve still moved over the last quarter of the steps (:func:`trend`: was the step
  budget enough?), the commit, device and command; the curves are held-out accuracy vs gradient
  step, mean over seeds with the min-max band and the baseline dashed (for induction heads
  ``train/token_acc``, every 100 steps: its sequences are drawn fresh at every step, so it is
  measured on data the model has not seen, beside the evaluations at 16x).

``--rows`` takes names from :data:`ROWS` or ``all``; any other preset of
``experiments/configs/ssm.py`` is accepted as a row without a published claim (the tests use
``smoke``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import ml_collections
import numpy as np
from absl import app, flags

import harness
from experiments.configs import ssm as ssm_configs
from harness.stats import bootstrap_ci, iqm
from ssm import train as ssm_train

CONFIG_PATH = "experiments/configs/ssm.py"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS_FILE = "runs.jsonl"
MAMBA = "Mamba paper (arXiv 2312.00752 v2)"
# A change of accuracy over the last quarter of training counted as "still moving": about twice the
# binomial sd of one evaluation of 4096 tokens at accuracy 0.5 (0.008), so evaluation noise alone
# rarely crosses it.
MOVING = 0.02


class Claim(NamedTuple):
    """A published direction checked on one metric: ``metric >= threshold`` (``op=">="``) or
    ``<=``. The threshold is ours (the paper's setting is longer); ``text`` says what it encodes."""

    metric: str
    op: str
    threshold: float
    text: str
    given: str = ""  # a metric whose IQM must be >= 0.9 for the claim to apply (else: n/a)


class Group(NamedTuple):
    """A task: its table columns (final held-out metrics), curve metrics and seed cap."""

    title: str
    columns: tuple[str, ...]
    curves: tuple[str, ...]
    max_seeds: int


class Row(NamedTuple):
    preset: str
    group: str
    model: str
    paper: str  # the published number and where it is, or why there is none
    claims: tuple[Claim, ...] = ()


IND_COLS = ("eval/token_acc", "eval/token_acc_L1024", "eval/token_acc_L4096",
            "eval/token_acc_L16384")  # fmt: skip
GROUPS: dict[str, Group] = {
    "selective_copying": Group(
        "Selective copying, 16 data tokens among 256 noise positions (4000 steps)",
        ("eval/token_acc", "eval/seq_acc"), ("eval/token_acc",), 5),
    "induction": Group(
        "Induction heads, trained at L = 256, evaluated at 256 / 1024 / 4096 / 16384 (6000 steps)",
        IND_COLS, ("train/token_acc", "eval/token_acc_L4096"), 5),
    "mqar": Group("MQAR, vocab 64 (3000 steps)", ("eval/token_acc", "eval/seq_acc"),
                  ("eval/token_acc",), 5),
    "listops": Group("ListOps <= 128 tokens, held-out trees (3000 steps)", ("eval/token_acc",),
                     ("eval/token_acc",), 5),
    "other": Group("Other presets", ("eval/token_acc", "eval/seq_acc"), ("eval/token_acc",), 5),
}  # fmt: skip

_SOLVES_SC = Claim("eval/token_acc", ">=", 0.9, "solves selective copying (token acc >= 0.9)")
_LTI_SC = Claim("eval/token_acc", "<=", 0.6, "an LTI model fails (token acc <= 0.6)")
_LTI_PAPER = (f"{MAMBA} Table 1 at L = 4096: S4 without gate 18.3%, S4 in the Mamba block 56.4% "
              "(Mamba 99.8%)")  # fmt: skip
_IND_MAMBA = (f"{MAMBA} §4.1.2 (induction-heads extrapolation table): Mamba 100% at every test "
              "length up to 2^20 after 204 800 steps")  # fmt: skip
_PERFECT_16X = Claim("eval/token_acc_L4096", ">=", 0.95, "extrapolates to 16x (acc @4096 >= 0.95)")
ROWS: dict[str, Row] = {r.preset: r for r in (
    Row("sc256_mamba", "selective_copying", "Mamba", f"{MAMBA} Table 1: Mamba (S6) 99.8% at "
        "L = 4096 after 400K steps", (_SOLVES_SC,)),
    Row("sc256_mamba2", "selective_copying", "Mamba-2",
        f"not in {MAMBA} Table 1 (Mamba-2 is selective, so the direction is Mamba's)",
        (_SOLVES_SC,)),
    Row("sc256_s4d", "selective_copying", "S4D-Lin (LTI)", _LTI_PAPER, (_LTI_SC,)),
    Row("sc256_s4", "selective_copying", "S4 DPLR (LTI)", _LTI_PAPER, (_LTI_SC,)),
    Row("sc256_transformer", "selective_copying", "Transformer (RoPE)",
        f"not in {MAMBA} Table 1; no published number"),
    Row("ind256_mamba", "induction", "Mamba", _IND_MAMBA, (_PERFECT_16X,)),
    Row("ind256_mamba2", "induction", "Mamba-2", f"not in {MAMBA} (no published number)"),
    Row("ind256_transformer", "induction", "Transformer (RoPE)",
        f"{MAMBA} §4.1.2: MHA (absolute / RoPE / xPos) 100% at 256, then drops (xPos 67.6% at "
        "1024, 25.4% at 2048)",
        (Claim("eval/token_acc", ">=", 0.95, "solves the training length (acc @256 >= 0.95)"),
         Claim("eval/token_acc_L4096", "<=", 0.5, "does not extrapolate (acc @4096 <= 0.5)",
               given="eval/token_acc"))),
    Row("ind256_hybrid", "induction", "Hybrid: Mamba + RoPE attention at layer 1",
        "no published number for this hybrid"),
    Row("mqar_kv8_mamba", "mqar", "Mamba, 8 pairs, L = 128",
        "Zoology (arXiv 2312.04927) Fig. 2, plots only: SSMs need a larger d_model than attention"),
    Row("mqar_kv8_transformer", "mqar", "Transformer (RoPE), 8 pairs, L = 128",
        "Zoology Fig. 2, plots only: attention near 100% at every d_model",
        (Claim("eval/token_acc", ">=", 0.9, "attention solves MQAR (token acc >= 0.9)"),)),
    Row("mqar_kv16_mamba", "mqar", "Mamba, 16 pairs, L = 256",
        "Zoology Fig. 2, plots only: SSMs need a larger d_model than attention"),
    Row("mqar_kv16_transformer", "mqar", "Transformer (RoPE), 16 pairs, L = 256",
        "Zoology Fig. 2, plots only: attention near 100% at every d_model",
        (Claim("eval/token_acc", ">=", 0.9, "attention solves MQAR (token acc >= 0.9)"),)),
    Row("listops128_s4d", "listops", "S4D-Lin",
        "S4 repo: 59.5% on LRA ListOps (500-2000 tokens; not comparable); chance 10%",
        (Claim("eval/token_acc", ">=", 0.2, "learns above chance (held-out acc >= 0.2)"),)),
    Row("listops128_mamba", "listops", "Mamba", "no published number at this size; chance 10%",
        (Claim("eval/token_acc", ">=", 0.2, "learns above chance (held-out acc >= 0.2)"),)),
    Row("listops128_transformer", "listops", "Transformer (RoPE)",
        "no published number at this size; chance 10%",
        (Claim("eval/token_acc", ">=", 0.2, "learns above chance (held-out acc >= 0.2)"),)),
)}  # fmt: skip


class Job(NamedTuple):
    preset: str
    seed: int
    overrides: tuple[str, ...]  # "field=value" for --config.<field>=<value>


class Options(NamedTuple):
    out: str
    workers: int = 1
    timeout_s: float = 600.0
    budget_s: float = 0.0  # 0: no budget
    deadline_s: float = 0.0  # 0: none
    mem_fraction: float = 0.0  # 0: 0.9 / workers
    compile_cache: bool = True


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


def row_for(preset: str) -> Row:
    """The :data:`ROWS` entry, or a claim-less row for any other preset (ConfigError if none)."""
    if preset in ROWS:
        return ROWS[preset]
    ssm_configs.get_config(preset)  # raises ConfigError listing the presets
    return Row(preset, "other", preset, "no published claim attached")


def resolve_rows(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        for p in ROWS if n == "all" else [n]:
            if p not in out:
                row_for(p)
                out.append(p)
    return out


def scaled_overrides(preset: str, scale: float) -> tuple[str, ...]:
    """Overrides that run ``scale`` times the preset's gradient steps with as many evaluations
    (at least one update and one evaluation)."""
    if scale == 1.0:
        return ()
    t = ssm_configs.get_config(preset).train
    total = max(1, round(t.num_updates * t.steps_per_update * scale))
    spu = min(t.steps_per_update, total)
    updates = max(1, round(total / spu))
    evals = t.num_updates // t.eval_every if t.eval_every else 1
    return (f"train.num_updates={updates}", f"train.steps_per_update={spu}",
            f"train.eval_every={max(1, updates // max(evals, 1))}",
            f"train.checkpoint_every={max(1, updates // 2)}")  # fmt: skip


def plan(rows: Sequence[str], seeds: Sequence[int], scale: float = 1.0,
         sets: Sequence[str] = ()) -> list[Job]:  # fmt: skip
    """Jobs in launch order: by group priority (GROUPS order), then seed, then row; each row
    runs its group's first ``max_seeds`` seeds."""
    order = list(GROUPS)
    jobs = []
    for g in sorted({row_for(r).group for r in rows}, key=order.index):
        group_rows = [r for r in rows if row_for(r).group == g]
        for s in list(seeds)[: GROUPS[g].max_seeds]:
            for r in group_rows:
                jobs.append(Job(r, int(s), (*scaled_overrides(r, scale), *sets)))
    return jobs


def workdir(out: str, job: Job) -> str:
    return os.path.join(out, "runs", job.preset, f"seed{job.seed}")


def command(job: Job, out: str) -> list[str]:
    return [sys.executable, "-m", "experiments.ssm", "--config", f"{CONFIG_PATH}:{job.preset}",
            f"--config.seed={job.seed}", "--config.progress=False",
            *[f"--config.{o}" for o in job.overrides], "--workdir", workdir(out, job)]  # fmt: skip


def worker_env(opts: Options) -> dict[str, str]:
    env = dict(os.environ)
    frac = opts.mem_fraction or 0.9 / max(opts.workers, 1)
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{frac:.3f}"
    if opts.compile_cache:
        env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.path.abspath(opts.out), "jax_cache")
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def _tail(path: str, n: int = 1500) -> str:
    with open(path, errors="replace") as f:
        return f.read()[-n:]


def run_job(job: Job, opts: Options, t0: float, env: dict[str, str]) -> dict[str, Any]:
    """Runs one job (or records why not); returns its runs.jsonl record."""
    wd = workdir(opts.out, job)
    cmd = command(job, opts.out)
    rec = {"preset": job.preset, "seed": job.seed, "workdir": wd, "command": shlex.join(cmd)}
    start = time.monotonic() - t0
    if os.path.exists(os.path.join(wd, harness.SUMMARY_FILE)):
        return {**rec, "status": "ok", "reused": True, "wall_s": 0.0}
    if opts.budget_s and start > opts.budget_s:
        return {**rec, "status": "skipped", "why": f"not started by --budget_s={opts.budget_s}"}
    timeout = opts.timeout_s
    if opts.deadline_s:
        timeout = min(timeout, opts.deadline_s - start)
    log = os.path.join(opts.out, "logs", f"{job.preset}_seed{job.seed}.log")
    rec.update(log=log, started_s=round(start, 1))
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
                                timeout=max(timeout, 1.0)).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            rc = None
    rec["wall_s"] = round(time.monotonic() - t0 - start, 1)
    done = os.path.exists(os.path.join(wd, harness.SUMMARY_FILE))
    rec.update(rc=rc, status="ok" if rc == 0 and done else ("timeout" if rc is None else "failed"))
    if rec["status"] != "ok":
        rec["log_tail"] = _tail(log)
    return rec


def run_sweep(jobs: Sequence[Job], opts: Options) -> list[dict[str, Any]]:
    """Runs ``jobs`` on ``opts.workers`` processes, appending each record to runs.jsonl."""
    os.makedirs(os.path.join(opts.out, "logs"), exist_ok=True)
    env, t0, lock, records = worker_env(opts), time.monotonic(), threading.Lock(), []

    def one(job: Job) -> None:
        rec = run_job(job, opts, t0, env)
        with lock:
            records.append(rec)
            with open(os.path.join(opts.out, RUNS_FILE), "a") as f:
                f.write(json.dumps(rec) + "\n")
            shown = f"{rec['status']} in {rec.get('wall_s', 0):.0f} s"
            print(f"[ssm_table {time.monotonic() - t0:5.0f} s] {job.preset} seed {job.seed}: "
                  f"{shown} ({len(records)}/{len(jobs)})", flush=True)  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(opts.workers, 1)) as pool:
        for fut in [pool.submit(one, j) for j in jobs]:
            fut.result()
    return records


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------


def read_records(out: str) -> dict[tuple[str, int], dict[str, Any]]:
    """The last runs.jsonl record of each (preset, seed); a rerun that found the run finished
    does not hide the record of the run itself."""
    path = os.path.join(out, RUNS_FILE)
    recs: dict[tuple[str, int], dict[str, Any]] = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    if not (r.get("reused") and (r["preset"], r["seed"]) in recs):
                        recs[(r["preset"], r["seed"])] = r
    return recs


def _summary(wd: str) -> dict[str, Any] | None:
    path = os.path.join(wd, harness.SUMMARY_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _stat(values: Sequence[float], reps: int) -> dict[str, Any]:
    if not values:
        return {"n": 0, "iqm": None, "ci95": [None, None], "values": []}
    lo, hi = bootstrap_ci(values, reps=reps)
    return {"n": len(values), "iqm": iqm(values), "ci95": [lo, hi], "values": list(values)}


def verdict(row: Row, metrics: dict[str, dict[str, Any]], versus: str = "") -> str:
    """One plain sentence: each claim reproduced / not reproduced / inconclusive, with numbers;
    ``versus`` (:func:`versus_baseline` of the first column) is added when given."""
    head = f"{row.model} (`{row.preset}`)"
    tail = f"; {versus}" if versus else ""
    if not row.claims:
        m = next((k for k, v in metrics.items() if v["n"]), None)
        if m is None:
            return f"{head}: no finished run. Paper: {row.paper}."
        s = metrics[m]
        return (f"{head}: {m} IQM {s['iqm']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] over "
                f"{s['n']} seed{'s' * (s['n'] != 1)}{tail}; no claim checked "
                f"({row.paper}).")  # fmt: skip
    parts = []
    for c in row.claims:
        s = metrics.get(c.metric, {"n": 0})
        if not s["n"]:
            parts.append(f"'{c.text}': no finished run")
            continue
        pre = metrics.get(c.given, {"n": 0}) if c.given else None
        if pre is not None and not (pre["n"] and pre["iqm"] >= 0.9):
            shown = f"{pre['iqm']:.3f}" if pre["n"] else "n/a"
            parts.append(f"'{c.text}' not applicable: {c.given} IQM {shown} < 0.9")
            continue
        lo, hi = s["ci95"]
        ok_lo, ok_hi = (lo >= c.threshold, hi >= c.threshold) if c.op == ">=" else (
            hi <= c.threshold, lo <= c.threshold)  # fmt: skip
        word = "reproduced" if ok_lo else ("not reproduced" if not ok_hi else "inconclusive")
        parts.append(f"'{c.text}' {word}: {c.metric} IQM {s['iqm']:.3f} [95% CI {lo:.3f}, "
                     f"{hi:.3f}], {s['n']} seed{'s' * (s['n'] != 1)}")  # fmt: skip
    return f"{head}: " + "; ".join(parts) + f"{tail}. Paper: {row.paper}."


@functools.cache
def _task_baseline(task_json: str) -> dict[str, Any] | None:
    """The task's :class:`ssm.tasks.Baseline` as a dict; cached because building ListOps' pools
    takes seconds and three rows share them."""
    task = ssm_train.make_task(ml_collections.ConfigDict({"task": json.loads(task_json)}))
    return None if task.baseline is None else task.baseline._asdict()


def baseline(out: str, preset: str, seeds: Sequence[int]) -> dict[str, Any] | None:
    """The control a row is read against (:class:`ssm.tasks.Baseline`), for the task the runs
    trained on: the first finished seed's ``config.json`` (so ``--set task.*`` overrides count),
    else the preset."""
    cfg = None
    for s in seeds:
        path = os.path.join(workdir(out, Job(preset, s, ())), harness.CONFIG_FILE)
        if os.path.exists(path):
            with open(path) as f:
                cfg = json.load(f)
            break
    task = cfg["task"] if cfg else ssm_configs.get_config(preset).task.to_dict()
    return _task_baseline(json.dumps(task, sort_keys=True))


def versus_baseline(s: dict[str, Any], base: dict[str, Any] | None) -> str:
    """Where a metric's CI lies against the baseline: above, at (the CI holds it) or below; one
    seed has no CI, and says so."""
    if base is None or not s["n"]:
        return ""
    if s["n"] < 2:
        return (f"{s['iqm']:.3f} against the baseline {base['accuracy']:.3f} ({base['rule']}): "
                "one seed, no CI")  # fmt: skip
    lo, hi = s["ci95"]
    where = "above" if lo > base["accuracy"] else ("below" if hi < base["accuracy"] else "at")
    return f"{where} the baseline {base['accuracy']:.3f} ({base['rule']})"


def aggregate_row(out: str, preset: str, seeds: Sequence[int], recs, reps: int) -> dict[str, Any]:
    row = row_for(preset)
    group = GROUPS[row.group]
    seeds = list(seeds)[: group.max_seeds]
    finals, statuses, provenance = {}, {}, set()
    for s in seeds:
        summ = _summary(workdir(out, Job(preset, s, ())))
        if summ is not None:
            finals[s] = summ["final_metrics"]
            statuses[s] = "ok"
            g = summ.get("git", {})
            kinds = [k for k in summ.get("device_kinds", []) if k != "cpu"]  # a GPU's name
            provenance.add((str(g.get("commit")), bool(g.get("dirty")), summ.get("backend"),
                            ", ".join(summ.get("devices", []))
                            + (f" ({', '.join(kinds)})" if kinds else "")))  # fmt: skip
        else:
            statuses[s] = recs.get((preset, s), {}).get("status", "missing")
    metrics = {m: _stat([finals[s][m] for s in finals if m in finals[s]], reps)
               for m in group.columns}  # fmt: skip
    base = baseline(out, preset, seeds)
    walls = [r["wall_s"] for s in finals
             if (r := recs.get((preset, s))) and not r.get("reused")]  # fmt: skip
    moves = trend(out, preset, seeds, group.curves[0])
    return {"preset": preset, "group": row.group, "model": row.model, "paper": row.paper,
            "wall_s_median": float(np.median(walls)) if walls else None,
            "claims": [c._asdict() for c in row.claims], "seeds": seeds, "statuses": statuses,
            "metrics": metrics, "baseline": base,
            "verdict": verdict(row, metrics, versus_baseline(metrics[group.columns[0]], base)),
            "trend": moves, "budget": budget_sentence(moves),
            "provenance": sorted(provenance)}  # fmt: skip


def curves(out: str, preset: str, seeds: Sequence[int], metric: str):
    """(gradient steps, per-seed values) of ``metric`` for the finished seeds, on common steps."""
    per_seed = []
    for s in seeds:
        wd = workdir(out, Job(preset, s, ()))
        if _summary(wd) is None:
            continue
        with open(os.path.join(wd, harness.CONFIG_FILE)) as f:
            spu = json.load(f)["train"]["steps_per_update"]
        pts = {r["step"] * spu: r[metric] for r in harness.read_metrics(wd) if metric in r}
        if pts:
            per_seed.append(pts)
    if not per_seed:
        return None, None
    steps = sorted(set.intersection(*(set(p) for p in per_seed)))
    return np.array(steps), np.array([[p[x] for x in steps] for p in per_seed])


def trend(out: str, preset: str, seeds: Sequence[int], metric: str) -> dict[str, Any] | None:
    """Whether the step budget was enough: per finished seed, the change of ``metric`` over the
    last quarter of training (its value at the last logged step minus the value at the last
    logged step at or before 3/4 of it), and how many seeds still rise or fall by more than
    :data:`MOVING`. None without two logged steps."""
    x, y = curves(out, preset, seeds, metric)
    if x is None or len(x) < 2:
        return None
    i = int(np.clip(np.searchsorted(x, 0.75 * x[-1], side="right") - 1, 0, len(x) - 2))
    delta = y[:, -1] - y[:, i]
    return {"metric": metric, "from_step": int(x[i]), "to_step": int(x[-1]),
            "delta": [float(d) for d in delta], "median": float(np.median(delta)),
            "rising": int((delta > MOVING).sum()),
            "falling": int((delta < -MOVING).sum())}  # fmt: skip


def budget_sentence(t: dict[str, Any] | None) -> str:
    """:func:`trend` in words. A row whose seeds still rise by more than :data:`MOVING` needs
    more steps than it got; "within" is only that no seed moved more than that (a slow climb
    can hide under it: read the per-seed changes)."""
    if t is None:
        return ""
    n = len(t["delta"])
    within = n - t["rising"] - t["falling"]
    per_seed = ", ".join(f"{d:+.3f}" for d in t["delta"])
    need = "; the row needs more steps than it got" if t["rising"] else ""
    return (f"Budget: {t['metric']} moved {t['median']:+.3f} (median; per seed {per_seed}) over "
            f"steps {t['from_step']}-{t['to_step']}: rising on {t['rising']}, falling on "
            f"{t['falling']} and within ±{MOVING} on {within} of {n} seed{'s' * (n != 1)}"
            f"{need}.")  # fmt: skip


def plot_group(out: str, group: str, rows: Sequence[dict[str, Any]]) -> str | None:
    """``<out>/<group>.png``: one panel per curve metric, a line per row (mean over finished
    seeds) with its min-max band."""
    # matplotlib costs ~0.5 s to import; only the aggregation needs it.
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on the GPU machine or in CI
    import matplotlib.pyplot as plt

    g = GROUPS[group]
    fig, axes = plt.subplots(1, len(g.curves), figsize=(6 * len(g.curves), 4), squeeze=False)
    drawn = False
    for ax, metric in zip(axes[0], g.curves, strict=True):
        for r in rows:
            x, y = curves(out, r["preset"], r["seeds"], metric)
            if x is None or not len(x):
                continue
            (line,) = ax.plot(
                x, y.mean(0), marker="o", ms=3, label=f"{r['model']} ({len(y)} seeds)"
            )
            ax.fill_between(x, y.min(0), y.max(0), alpha=0.2, color=line.get_color())
            if r["baseline"] is not None:
                ax.axhline(r["baseline"]["accuracy"], ls="--", lw=1, color=line.get_color())
            drawn = True
        ax.set_title(f"{metric} (line: mean over seeds; band: min-max; dashed: baseline)",
                     fontsize=9)  # fmt: skip
        ax.set_xlabel("gradient step")
        ax.set_ylabel("held-out accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(g.title, fontsize=10)
    fig.tight_layout()
    path = os.path.join(out, f"{group}.png")
    if drawn:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path if drawn else None


def _fmt_stat(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "n/a"
    vals = ", ".join(f"{v:.3f}" for v in s["values"])
    return f"{s['iqm']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}] ({vals})"


def markdown(table: dict[str, Any]) -> str:
    lines = [
        "# SSM synthetic tasks over seeds (issue 24)", "",
        f"runs at commit{'s' * (len(table['run_commits']) != 1)} "
        f"{', '.join(f'`{c}`' for c in table['run_commits']) or 'none'} (each run's "
        f"`summary.json`); device: {table['device']}; aggregated at `{table['commit']}`"
        f"{' (dirty)' if table['dirty'] else ''} by `{table['command']}`; steps scale "
        f"{table['steps_scale']}.",
        "", "Cells: IQM [95% bootstrap CI] (per-seed values) of the final held-out metric; "
        "baseline: the token accuracy of a predictor without the task's skill (`ssm.tasks."
        "Baseline`, rule in each verdict); last-quarter change: the median over seeds of how "
        "much the first curve metric moved over the last quarter of the steps, and how many "
        f"seeds rose by more than {MOVING} (`ssm_table.trend`: is the budget enough?); run s: "
        "median wall time of a run's process (start, compile, train, eval) in this sweep.",
    ]  # fmt: skip
    for group, rows in table["groups"].items():
        cols = GROUPS[group].columns
        lines += ["", f"## {GROUPS[group].title}", "",
                  "| row (preset) | model | seeds ok | " + " | ".join(cols)
                  + " | baseline | last-quarter change (seeds rising) | run s |",
                  "|---|---|---|" + "---|" * (len(cols) + 3)]  # fmt: skip
        for r in rows:
            ok = sum(st == "ok" for st in r["statuses"].values())
            cells = " | ".join(_fmt_stat(r["metrics"][c]) for c in cols)
            wall = "n/a" if r["wall_s_median"] is None else f"{r['wall_s_median']:.0f}"
            base = "n/a" if r["baseline"] is None else f"{r['baseline']['accuracy']:.3f}"
            t = r["trend"]
            move = "n/a" if t is None else f"{t['median']:+.3f} ({t['rising']}/{len(t['delta'])})"
            lines.append(f"| `{r['preset']}` | {r['model']} | {ok}/{len(r['seeds'])} | {cells} "
                         f"| {base} | {move} | {wall} |")  # fmt: skip
        lines += [""] + [f"* {r['verdict']} {r['budget']}".rstrip() for r in rows]
    bad = [f"`{p}` seed {s}: {st}" for r in table["rows"] for s, st in r["statuses"].items()
           for p in [r["preset"]] if st != "ok"]  # fmt: skip
    lines += ["", "## Runs not in the table", ""] + ([f"* {b}" for b in bad] or ["* none"])
    return "\n".join(lines) + "\n"


def _git() -> tuple[str, bool]:
    info = harness.git_info(__file__)
    return str(info.get("commit")), bool(info.get("dirty"))


def aggregate(out: str, rows: Sequence[str], seeds: Sequence[int], command_line: str,
              steps_scale: float = 1.0, reps: int = 2000,
              commit: str = "") -> dict[str, Any]:  # fmt: skip
    """Reads the finished workdirs under ``out``; writes table.json, table.md, <group>.png."""
    recs = read_records(out)
    agg = [aggregate_row(out, p, seeds, recs, reps) for p in rows]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in agg:
        groups.setdefault(r["group"], []).append(r)
    devices = sorted({f"{p[2]}: {p[3]}" for r in agg for p in r["provenance"]})
    git_commit, dirty = _git()
    if commit:  # a copy of the tree without .git (a GPU machine) is told its commit
        git_commit, dirty = commit, False
    table = {"commit": git_commit, "dirty": dirty,
             "run_commits": sorted({p[0] + (" (dirty)" if p[1] else "") for r in agg
                                    for p in r["provenance"]}),
             "device": "; ".join(devices) or "no finished run",
             "command": command_line, "steps_scale": steps_scale, "groups": groups, "rows": agg,
             "plots": [os.path.basename(p) for g, rs in groups.items()
                       if (p := plot_group(out, g, rs))]}  # fmt: skip
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "table.json"), "w") as f:
        json.dump(table, f, indent=2, default=str)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(markdown(table))
    return table


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags; defined only when it runs, so that importing this module (tests,
    other scripts) does not clash with other absl flag sets such as flowrl_sweep's."""
    flags.DEFINE_list("rows", ["all"], f"Presets (rows) or 'all' = {', '.join(ROWS)}.")
    flags.DEFINE_list(
        "seeds", ["0", "1", "2", "3", "4"], "Seeds (each group runs at most its max_seeds)."
    )
    flags.DEFINE_integer("workers", 1, "Parallel run processes.")
    flags.DEFINE_string("out", None, "Output directory.")
    flags.DEFINE_float(
        "steps_scale", 1.0, "Multiply every preset's gradient steps (a quick check)."
    )
    flags.DEFINE_float("timeout_s", 600.0, "Per-run wall-clock limit (the run is killed).")
    flags.DEFINE_float("budget_s", 0.0, "Launch no run after this many seconds (0: no limit).")
    flags.DEFINE_float("deadline_s", 0.0, "Kill runs still going at this many seconds (0: none).")
    flags.DEFINE_float(
        "mem_fraction", 0.0, "XLA_PYTHON_CLIENT_MEM_FRACTION per run (0: 0.9/workers)."
    )
    flags.DEFINE_bool("compile_cache", True, "Share a persistent JAX compilation cache in <out>.")
    flags.DEFINE_multi_string("set", [], "field=value passed as --config.field=value to every run.")
    flags.DEFINE_bool("aggregate_only", False, "Only rebuild the table from finished workdirs.")
    flags.DEFINE_integer("bootstrap_reps", 2000, "Bootstrap resamples.")
    flags.DEFINE_string(
        "commit", "", "The commit to record when the tree has no .git (default: git)."
    )
    flags.mark_flags_as_required(["out"])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        rows = resolve_rows(FLAGS.rows)
    except harness.ConfigError as err:
        raise app.UsageError(str(err)) from None
    seeds = [int(s) for s in FLAGS.seeds]
    if not FLAGS.aggregate_only:
        jobs = plan(rows, seeds, FLAGS.steps_scale, FLAGS.set)
        opts = Options(FLAGS.out, FLAGS.workers, FLAGS.timeout_s, FLAGS.budget_s,
                       FLAGS.deadline_s, FLAGS.mem_fraction, FLAGS.compile_cache)  # fmt: skip
        print(f"[ssm_table] {len(jobs)} runs on {FLAGS.workers} workers -> {FLAGS.out}", flush=True)
        run_sweep(jobs, opts)
    cmd = "python -m experiments.ssm_table " + shlex.join(sys.argv[1:])
    table = aggregate(FLAGS.out, rows, seeds, cmd, FLAGS.steps_scale, FLAGS.bootstrap_reps,
                      FLAGS.commit)  # fmt: skip
    print(markdown(table))


def underscore_flags(argv: Sequence[str]) -> list[str]:
    """``--steps-scale`` -> ``--steps_scale`` (flag names only; values are left alone)."""
    out = []
    for a in argv:
        if a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            a = "--" + name.replace("-", "_") + eq + value
        out.append(a)
    return out


if __name__ == "__main__":
    # The runs own the GPU: this process never starts a backend, and would not preallocate.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    define_flags()
    app.run(main, argv=underscore_flags(sys.argv))
