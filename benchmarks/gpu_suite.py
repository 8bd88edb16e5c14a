"""One GPU benchmark command: scan kernels, decoding, env stepping, SAC and the flowrl RL step.

Writes one JSON (``--out``) with a row per measurement or a one-line reason why a row was
skipped. Budget: <= 8 minutes on one H100/H200 (each subprocess row has a timeout; the scan row
stops adding sizes once its share of the budget is spent and records which sizes it skipped).

Rows:

* ``scan``: ``ssm.scan.selective_scan`` forward and forward+backward for every registered method
  at the Mamba grid (bf16, D-skip, z gate, delta_bias, softplus): median ms, GB/s against
  ``ssm.scan.min_bytes``, fraction of the HBM bound (a measured copy bandwidth) and of the
  exp-throughput bound (``b L D N`` exps forward, twice that for fwd+bwd, at ``--exp-rate``
  exps/s; the default is the H100/H200 SFU rate 16/clk/SM x 132 SMs x 1.98 GHz), and x ref;
* ``decode``: ``benchmarks/decode.py``, Mamba recurrent vs Transformer KV cache, L = 1k..16k;
* ``envs``: ``benchmarks/envs.py``, Hopper (MJX) env steps/s at B = 1k..8k (the dry run steps
  pendulum: Hopper's MJX compile alone exceeds a minute on a 2-core CPU);
* ``sac``: ``benchmarks/sac.py`` (our SAC / AdaRL step, without the Brax baseline);
* ``flowrl``: ``benchmarks/flowrl_step.py``, the flowrl RL step for Mamba and Transformer.

Offline GPU images. The target image has jax, flax, optax, chex, orbax and absl but no package
registry. Rows that need other packages (mujoco, mujoco-mjx, ml-collections, brax, playground,
evosax) are probed in a subprocess; with ``--wheels DIR`` a missing module's package is installed
with ``pip install --no-index --find-links DIR`` first. Prepare DIR on a machine with PyPI
access, for the GPU image's Python (e.g. 3.12)::

    pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --platform manylinux2014_x86_64 -d wheels mujoco mujoco-mjx ml-collections

(sizes not measured here). A row whose modules are still missing is skipped with the reason.

Usage::

    python -m benchmarks.gpu_suite --out gpu_suite.json [--wheels wheels]
    python -m benchmarks.gpu_suite --dry-run --out /tmp/s.json   # every row, tiny, CPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

from benchmarks import scan as scan_bench
from ssm import scan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# H100 SXM / H200: 132 SMs x 16 SFU exp2 per clock x 1.98 GHz boost (not measured here).
DEFAULT_EXP_RATE = 132 * 16 * 1.98e9
SCAN_SIZES = [(8, 2048, 1536, 16), (1, 2048, 1536, 16), (8, 512, 1536, 16), (8, 8192, 1536, 16)]
DRY_SCAN_SIZES = [(1, 32, 16, 4)]
# Import name -> pip distribution, for the --wheels step.
PACKAGES = {
    "mujoco": "mujoco",
    "mujoco_mjx": "mujoco-mjx",
    "ml_collections": "ml-collections",
    "brax": "brax",
    "mujoco_playground": "playground",
    "evosax": "evosax",
}

# name -> (module probed, full args, dry-run args, timeout s full, timeout s dry).
SUBPROCESS_ROWS = {
    "decode": (
        "benchmarks.decode",
        ["--lengths", "1024", "2048", "4096", "8192", "16384", "--batch", "8", "--repeats", "3"],
        ["--lengths", "8", "--batch", "1", "--d_model", "16", "--n_layers", "1", "--repeats",
         "1", "--reencode_steps", "2"],
        150,
        60,
    ),
    "envs": (
        "benchmarks.envs",
        ["--tasks", "hopper", "--batch", "1024,2048,4096,8192", "--repeats", "3"],
        ["--tasks", "pendulum", "--batch", "2", "--steps", "2", "--repeats", "1",
         "--min-env-steps", "1"],
        120,
        120,
    ),
    "sac": (
        "benchmarks.sac",
        ["--skip_brax", "--num_envs", "1024", "--repeats", "3"],
        ["--skip_brax", "--num_envs", "2", "--steps", "2", "--repeats", "1",
         "--prefill", "32", "--batch_size", "8", "--grad_updates", "1",
         "--episode_length", "10"],
        90,
        180,
    ),
    "flowrl": (
        "benchmarks.flowrl_step",
        ["--preset", "cpu", "--repeats", "3"],
        ["--preset", "smoke", "--repeats", "1", "--layers", "mamba"],
        90,
        120,
    ),
}  # fmt: skip


def scan_rows(sizes, dtype, repeats, exp_rate, budget_s, interpret_max_elems):
    """Forward and fwd+bwd of every method at ``sizes``; adds the bound fractions to the
    records of ``benchmarks.scan.run`` (one size at a time so the budget can stop it)."""
    t_start, records, skipped = time.perf_counter(), [], []
    copy_gbs = scan_bench.copy_bandwidth(1 << 28 if jax.default_backend() != "cpu" else 1 << 20, 5)
    for size in sizes:
        if time.perf_counter() - t_start > budget_s:
            skipped.append({"size": size, "reason": f"scan budget {budget_s:.0f} s spent"})
            continue
        recs = scan_bench.run([size], scan.methods(), dtype, repeats, 64, interpret_max_elems)
        b, L, D, N = size
        for r in recs:
            if r["status"] != "ok":
                records.append(r)
                continue
            n_exp = b * L * D * N * (2 if r["mode"] == "fwd+bwd" else 1)
            r["frac_hbm_bound"] = r["gbps"] / copy_gbs
            r["exp_bound_ms"] = 1e3 * n_exp / exp_rate
            r["frac_exp_bound"] = r["exp_bound_ms"] / r["time_ms"]
            records.append(r)
    return {"copy_gb_s": copy_gbs, "records": records, "skipped": skipped}


def missing_modules(module: str, env: dict) -> str | None:
    """Import ``module`` in a fresh interpreter; the missing top-level module's name, or None."""
    probe = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode == 0:
        return None
    m = re.search(r"No module named '([\w.]+)'", probe.stderr)
    return m.group(1) if m else probe.stderr.strip().splitlines()[-1]


def install_from_wheels(module: str, wheels: str) -> str:
    pkg = PACKAGES.get(module.split(".")[0], module.split(".")[0])
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels, pkg],
        capture_output=True,
        text=True,
    )
    return f"pip install {pkg}: rc={res.returncode}"


def run_subprocess_row(name, dry_run, wheels, out_dir):
    module, args, dry_args, timeout_s, dry_timeout_s = SUBPROCESS_ROWS[name]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notes = []
    for _ in range(3):  # each retry may install one more missing package
        missing = missing_modules(module, env)
        if missing is None or not wheels:
            break
        notes.append(install_from_wheels(missing, wheels))
    if missing is not None:
        hint = f" (tried {notes})" if notes else " (pass --wheels DIR)"
        return {"status": "skipped", "reason": f"cannot import {module}: {missing}{hint}"}
    out = os.path.join(out_dir, f"{name}.json")
    cmd = [sys.executable, "-m", module, *(dry_args if dry_run else args), "--out", out]
    t0 = time.perf_counter()
    try:
        res = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=dry_timeout_s if dry_run else timeout_s,
        )
    except subprocess.TimeoutExpired as e:
        return {"status": "skipped", "reason": f"timed out after {e.timeout} s", "cmd": cmd}
    row = {"cmd": " ".join(cmd[1:]), "wall_s": time.perf_counter() - t0, "notes": notes}
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        return {**row, "status": "skipped", "reason": f"exit {res.returncode}: {last}"}
    with open(out) as f:
        return {**row, "status": "ok", "result": json.load(f)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="every row at tiny shapes (CPU)")
    p.add_argument("--rows", default="scan," + ",".join(SUBPROCESS_ROWS))
    p.add_argument("--wheels", default=None, help="directory of wheels for missing packages")
    p.add_argument("--exp-rate", type=float, default=DEFAULT_EXP_RATE, help="exps per second")
    p.add_argument("--scan-budget-s", type=float, default=180.0)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default="gpu_suite.json")
    args = p.parse_args(argv)
    rows = args.rows.split(",")
    unknown = sorted(set(rows) - {"scan", *SUBPROCESS_ROWS})
    if unknown:
        p.error(f"unknown rows {unknown}; choose from scan,{','.join(SUBPROCESS_ROWS)}")
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "dry_run": args.dry_run,
        "rows": {},
    }
    if "scan" in rows:
        dtype = jnp.float32 if args.dry_run else jnp.bfloat16
        sizes = DRY_SCAN_SIZES if args.dry_run else SCAN_SIZES
        repeats = 1 if args.dry_run else args.repeats
        result["rows"]["scan"] = {
            "status": "ok",
            "exp_rate": args.exp_rate,
            **scan_rows(sizes, dtype, repeats, args.exp_rate, args.scan_budget_s, 1 << 40),
        }
    with tempfile.TemporaryDirectory() as tmp:
        for name in rows:
            if name in SUBPROCESS_ROWS:
                result["rows"][name] = run_subprocess_row(name, args.dry_run, args.wheels, tmp)
                r = result["rows"][name]
                print(f"{name}: {r['status']} {r.get('reason', '')}", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
