"""Benchmark of the selective-scan back-ends: forward and forward+backward.

For every (batch, length, d_inner, d_state) in the size set and every back-end of
``ssm.scan.methods()`` this times the jitted Mamba-style call (D-skip, z gate, delta_bias,
softplus, bf16 or f32 activations) with a warm-up call, ``block_until_ready`` and the median of
repeats, and reports

* time (ms, median) and the min/max of the repeats;
* achieved GB/s against the minimum bytes a fused kernel must move, ``ssm.scan.min_bytes``
  (``s b L (4D + 2N)`` forward with z: read u, delta, z, B, C, write y; forward+backward
  adds ``s b L (7D + 4N)``);
* giga-elements/s, ``b L D N / t``;
* the same GB/s as a percentage of a copy bandwidth measured in the same run (read + write of
  an f32 elementwise op), the practical roofline;
* the speed-up of each back-end over "ref" measured in the same run (``t_ref / t``).

Sizes: ``--quick`` is a small f32 CPU set that finishes in under two minutes on a 2-core CPU;
the Pallas kernel in interpret mode (the CPU default) is timed only at the smallest size there,
and is marked "interpret" in the table, since interpret mode measures the Python-level emulation,
not the kernel. The default set is the Mamba paper's shapes for a GPU (batch 1..8, length
512..8192, d_inner 1536..2048, d_state 16, bf16). Failures (e.g. out of memory for
"associative", which materialises f32[b, L, D, N] several times) are recorded, not fatal.

Usage::

    python benchmarks/scan.py --quick            # CPU, < 2 min
    python benchmarks/scan.py --out results.json # GPU default grid
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssm import scan  # noqa: E402

# (batch, length, d_inner, d_state)
QUICK_SIZES = [(1, 256, 64, 16), (2, 1024, 128, 16)]
MAMBA_SIZES = [
    (batch, length, d_inner, 16)
    for batch in (1, 8)
    for length in (512, 2048, 8192)
    for d_inner in (1536, 2048)
]
# Largest b*L*D at which the Pallas kernel is timed in interpret mode (quick: smallest size).
INTERPRET_MAX_ELEMS = 1 * 256 * 64


def make_inputs(batch, length, d_inner, d_state, dtype, seed=0):
    """Mamba-style operands (SSM.md §1.3 recipe) on the default device."""
    rng = np.random.default_rng(seed)
    act = (batch, length, d_inner)
    randn = lambda shape, dt=dtype: jnp.asarray(rng.standard_normal(shape, np.float32), dt)
    rand = lambda shape, dt=dtype: jnp.asarray(0.5 * rng.random(shape, np.float32), dt)
    return dict(
        u=randn(act),
        delta=rand(act),
        A=-rand((d_inner, d_state), jnp.float32),
        B=randn((batch, length, d_state)),
        C=randn((batch, length, d_state)),
        D=randn((d_inner,), jnp.float32),
        z=randn(act),
        delta_bias=rand((d_inner,), jnp.float32),
    )


def make_fns(method, chunk_size):
    call = functools.partial(
        scan.selective_scan, delta_softplus=True, method=method, chunk_size=chunk_size
    )

    def fwd(inputs):
        return call(**inputs)

    def loss(inputs):
        return jnp.sum(call(**inputs).astype(jnp.float32))

    return {"fwd": jax.jit(fwd), "fwd+bwd": jax.jit(jax.value_and_grad(loss))}


def time_fn(fn, inputs, repeats):
    """Seconds per call: compile + warm-up, then the median of ``repeats`` timed calls."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(inputs))
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(fn(inputs))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(inputs))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times), compile_s


def copy_bandwidth(nbytes, repeats):
    """Measured device read+write bandwidth (GB/s) of an elementwise f32 op over ``nbytes``:
    the practical roofline to compare the scans' GB/s with (SSM.md §6, §9)."""
    x = jnp.ones((nbytes // 4,), jnp.float32)
    fn = jax.jit(lambda x: x * 1.5 + 1.0)
    med, _, _, _ = time_fn(fn, x, repeats)
    return 2 * nbytes / med / 1e9


def run(sizes, methods, dtype, repeats, chunk_size, interpret_max_elems):
    interpret = jax.default_backend() == "cpu"
    records = []
    for batch, length, d_inner, d_state in sizes:
        inputs = make_inputs(batch, length, d_inner, d_state, dtype)
        ref_ms = {}
        for method in methods:
            note = ""
            if method == "pallas" and interpret:
                note = "interpret"
                if batch * length * d_inner > interpret_max_elems:
                    for mode in ("fwd", "fwd+bwd"):
                        records.append(
                            dict(
                                method=method,
                                mode=mode,
                                batch=batch,
                                length=length,
                                d_inner=d_inner,
                                d_state=d_state,
                                status="skipped (interpret mode)",
                                note=note,
                            )
                        )
                    continue
            for mode, fn in make_fns(method, chunk_size).items():
                rec = dict(
                    method=method,
                    mode=mode,
                    batch=batch,
                    length=length,
                    d_inner=d_inner,
                    d_state=d_state,
                    dtype=jnp.dtype(dtype).name,
                    note=note,
                )
                try:
                    med, lo, hi, compile_s = time_fn(fn, inputs, repeats)
                except Exception as e:  # noqa: BLE001 - OOM etc. is a result, not a crash
                    rec.update(status=f"failed: {type(e).__name__}: {str(e)[:200]}")
                    records.append(rec)
                    continue
                nbytes = scan.min_bytes(
                    batch,
                    length,
                    d_inner,
                    d_state,
                    jnp.dtype(dtype).itemsize,
                    gated=True,
                    backward=mode == "fwd+bwd",
                )
                if method == "ref":
                    ref_ms[mode] = med * 1e3
                rec.update(
                    status="ok",
                    time_ms=med * 1e3,
                    min_ms=lo * 1e3,
                    max_ms=hi * 1e3,
                    compile_s=compile_s,
                    min_bytes=nbytes,
                    gbps=nbytes / med / 1e9,
                    gelem_per_s=batch * length * d_inner * d_state / med / 1e9,
                    speedup_vs_ref=(ref_ms[mode] / (med * 1e3)) if mode in ref_ms else None,
                )
                records.append(rec)
                del fn
    return records


def format_table(records, copy_gbps):
    head = (
        f"{'method':<12} {'mode':<8} {'b':>2} {'L':>5} {'D':>5} {'N':>3} {'ms':>10} "
        f"{'GB/s':>8} {'%copy':>6} {'Gel/s':>7} {'x ref':>7}  note"
    )
    lines = [head, "-" * len(head)]
    for r in records:
        dims = f"{r['batch']:>2} {r['length']:>5} {r['d_inner']:>5} {r['d_state']:>3}"
        if r["status"] != "ok":
            lines.append(f"{r['method']:<12} {r['mode']:<8} {dims} {r['status']}")
            continue
        ratio = "" if r["speedup_vs_ref"] is None else f"{r['speedup_vs_ref']:7.2f}"
        lines.append(
            f"{r['method']:<12} {r['mode']:<8} {dims} {r['time_ms']:10.2f} {r['gbps']:8.3f} "
            f"{100 * r['gbps'] / copy_gbps:6.2f} {r['gelem_per_s']:7.3f} {ratio:>7}  {r['note']}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small CPU size set (< 2 min)")
    parser.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/scan_<jax backend>.json)"
    )
    parser.add_argument(
        "--methods",
        default=",".join(scan.methods()),
        help="comma-separated back-ends; 'ref' first gives the ratios",
    )
    parser.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "bfloat16"),
        help="activation dtype (default: float32 with --quick, else bfloat16)",
    )
    parser.add_argument(
        "--sizes", default=None, help="override the size set: BxLxDxN,... e.g. 1x2048x1536x16"
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--chunk-size", type=int, default=64)
    args = parser.parse_args(argv)

    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        scan.get_backend(m)  # unknown names -> ValueError listing the registered ones
    if "ref" in methods:  # ratios need the reference timed first at each size
        methods = ["ref"] + [m for m in methods if m != "ref"]
    sizes = QUICK_SIZES if args.quick else MAMBA_SIZES
    if args.sizes:
        sizes = [tuple(int(v) for v in item.split("x")) for item in args.sizes.split(",")]
        if any(len(size) != 4 or min(size) < 1 for size in sizes):
            parser.error(f"--sizes must be BxLxDxN,... with positive ints, got {args.sizes!r}")
    dtype = jnp.dtype(args.dtype or ("float32" if args.quick else "bfloat16"))
    repeats = args.repeats or (3 if args.quick else 10)

    t0 = time.perf_counter()
    # 1 GiB on an accelerator (well past its caches); 64 MiB on a shared CPU host.
    copy_gbps = copy_bandwidth((64 if jax.default_backend() == "cpu" else 1024) * 2**20, repeats)
    records = run(sizes, methods, dtype, repeats, args.chunk_size, INTERPRET_MAX_ELEMS)
    wall = time.perf_counter() - t0
    device = jax.devices()[0]
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        jax=jax.__version__,
        backend=jax.default_backend(),
        device=device.device_kind,
        quick=args.quick,
        repeats=repeats,
        chunk_size=args.chunk_size,
        wall_s=wall,
        workload="selective_scan with D, z, delta_bias, delta_softplus=True; loss sum(y)",
        bytes_formula="fwd s*b*L*(4D+2N); fwd+bwd adds s*b*L*(7D+4N) (ssm.scan.min_bytes)",
        interpret_max_elems=INTERPRET_MAX_ELEMS,
        copy_gbps=copy_gbps,
    )
    print(
        f"# {meta['backend']} ({meta['device']}), jax {meta['jax']}, {dtype.name}, "
        f"median of {repeats}; GB/s vs fused minimum bytes (SSM.md §6); %copy = GB/s as a % "
        f"of the measured copy bandwidth {copy_gbps:.1f} GB/s; 'x ref' = t_ref / t"
    )
    print(format_table(records, copy_gbps))
    print(f"# wall {wall:.1f} s")
    out = args.out or os.path.join("benchmarks", "results", f"scan_{meta['backend']}.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump({"meta": meta, "records": records}, f, indent=1)
    print(f"# wrote {out}")


if __name__ == "__main__":
    main()
