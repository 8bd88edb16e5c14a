"""Decoding throughput: Mamba (recurrent state) vs Transformer (KV cache) vs re-encoding the prefix.

For each total length L (prompt of 1 token, then L - 1 greedy new tokens, batch B), measures
tokens/s of:

* ``mamba_recurrent``: :func:`ssm.lm.generate` with the Mamba cache (conv + SSM state), O(1)/token;
* ``transformer_kv``: :func:`ssm.lm.generate` with the Transformer's KV cache, O(t)/token;
* ``mamba_bf16``: the same Mamba generate with ``dtype="bfloat16"`` (params f32, compute bf16);
* ``prefill_parallel`` / ``prefill_serial``: prompt tokens/s of Mamba's prefill of an L-token
  prompt, one parallel :meth:`ssm.lm.LM.prefill` pass (what ``generate`` does) against L
  recurrent steps in a ``lax.scan`` (what it did before);
* ``transformer_reencode`` / ``mamba_reencode``: no cache; every new token re-runs the parallel
  model on the sequence so far. To keep one compiled shape the prefix lives in a fixed (B, L)
  buffer (the model is causal, so positions > t do not change the logits at t); each step then
  costs one full-length forward, so the rate from the first ``--reencode_steps`` steps is the rate
  of the whole run for this implementation (it over-states the cost of a growing-prefix
  re-encoder by about 2x on average; said in the table note).

Each measurement: one warm-up call (compile), then ``--repeats`` rounds in which the four methods
are timed one after the other (``block_until_ready``), so they share the machine's load; the
median per method is reported, and the ratios come from the same run.

    python -m benchmarks.decode --quick          # CPU grid (L = 128, 256, 512), small model
    python -m benchmarks.decode --out decode.json  # L = 128 .. 4096
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from ssm import lm


def _interleaved_medians(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each ``fn()``; compiled first, then timed round-robin so that
    every method sees the same machine load (the CPU here is shared)."""
    for fn in fns.values():
        jax.block_until_ready(fn())  # warm-up / compile
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def make_reencode(model: lm.LM, steps: int):
    """Jitted greedy decoding without a cache: ``steps`` full forwards on a fixed buffer."""

    @jax.jit
    def run(params, buf):
        def body(t, buf):
            logits, _ = model.apply(params, buf)
            nxt = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, t, 1, keepdims=False), -1)
            return jax.lax.dynamic_update_slice_in_dim(
                buf, nxt[:, None].astype(jnp.int32), t + 1, 1
            )

        return jax.lax.fori_loop(0, steps, body, buf)

    return run


def make_prefills(model: lm.LM, batch: int, L: int):
    """Jitted (parallel, serial) prefill of an L-token prompt -> last logits f32[B, V]."""
    cfg = model.config

    @jax.jit
    def parallel(params, toks):
        caches = lm.init_caches(cfg, batch, L)
        return model.apply(params, toks, caches, method=lm.LM.prefill)[0]

    @jax.jit
    def serial(params, toks):
        def body(c, t):
            logits, _, c = model.apply(params, t, c, method=lm.LM.step)
            return c, logits

        return jax.lax.scan(body, lm.init_caches(cfg, batch, L), toks.T)[1][-1]

    return parallel, serial


def bench(lengths, batch, d_model, n_layers, repeats, reencode_steps, scan_method):
    common = dict(vocab_size=256, d_model=d_model, n_layers=n_layers, max_len=max(lengths))
    mamba_cfg = dict(common, layer="mamba", scan_method=scan_method)
    models = {
        "mamba": lm.make_model(mamba_cfg),
        "transformer": lm.make_model(dict(common, layer="transformer", n_heads=4)),
    }
    params = {k: lm.init_params(m, jax.random.PRNGKey(0)) for k, m in models.items()}
    mamba_bf16 = lm.make_model(dict(mamba_cfg, dtype="bfloat16"))
    rows = []
    key = jax.random.PRNGKey(1)
    for L in lengths:
        prompt = jnp.zeros((batch, 1), jnp.int32)
        buf = jnp.zeros((batch, L), jnp.int32)
        steps = min(reencode_steps, L - 1)
        fns, tokens = {}, {}
        for name, cached in (("mamba", "mamba_recurrent"), ("transformer", "transformer_kv")):
            m, p = models[name], params[name]
            fns[cached] = lambda m=m, p=p, L=L: lm.generate(
                m, p, prompt, key, L - 1, temperature=0.0
            )
            tokens[cached] = batch * (L - 1)
            run = make_reencode(m, steps)
            fns[f"{name}_reencode"] = lambda run=run, p=p: run(p, buf)
            tokens[f"{name}_reencode"] = batch * steps
        fns["mamba_bf16"] = lambda L=L: lm.generate(
            mamba_bf16, params["mamba"], prompt, key, L - 1, temperature=0.0
        )
        tokens["mamba_bf16"] = batch * (L - 1)
        toks = jax.random.randint(key, (batch, L), 0, 256)
        par, ser = make_prefills(models["mamba"], batch, L)
        fns["prefill_parallel"] = lambda par=par, toks=toks: par(params["mamba"], toks)
        fns["prefill_serial"] = lambda ser=ser, toks=toks: ser(params["mamba"], toks)
        tokens["prefill_parallel"] = tokens["prefill_serial"] = batch * L
        med = _interleaved_medians(fns, repeats)
        row = {"length": L, "batch": batch}
        row.update({f"{k}_tok_s": tokens[k] / med[k] for k in fns})
        r = row["mamba_recurrent_tok_s"]
        row["mamba_vs_transformer_kv"] = r / row["transformer_kv_tok_s"]
        row["mamba_vs_transformer_reencode"] = r / row["transformer_reencode_tok_s"]
        row["mamba_vs_mamba_reencode"] = r / row["mamba_reencode_tok_s"]
        row["bf16_vs_fp32"] = row["mamba_bf16_tok_s"] / r
        row["prefill_parallel_vs_serial"] = (
            row["prefill_parallel_tok_s"] / row["prefill_serial_tok_s"]
        )
        rows.append(row)
        print_row(row)
    return rows


HEADER = ("L", "mamba rec", "mamba bf16", "trf KV", "trf re-enc", "mamba re-enc", "prefill par",
          "prefill ser", "M/KV", "M/trf-re", "M/M-re", "bf16/f32", "par/ser")  # fmt: skip
_N_RATES = 7  # columns after L that are tokens/s; the rest are ratios


def print_row(r):
    vals = (r["length"], r["mamba_recurrent_tok_s"], r["mamba_bf16_tok_s"],
            r["transformer_kv_tok_s"], r["transformer_reencode_tok_s"],
            r["mamba_reencode_tok_s"], r["prefill_parallel_tok_s"], r["prefill_serial_tok_s"],
            r["mamba_vs_transformer_kv"], r["mamba_vs_transformer_reencode"],
            r["mamba_vs_mamba_reencode"], r["bf16_vs_fp32"],
            r["prefill_parallel_vs_serial"])  # fmt: skip
    rates, ratios = vals[1 : 1 + _N_RATES], vals[1 + _N_RATES :]
    print(f"{vals[0]:>6d} " + " ".join(f"{v:>12.1f}" for v in rates)
          + " " + " ".join(f"{v:>9.2f}" for v in ratios), flush=True)  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="CPU grid: L=128,256,512, small model")
    ap.add_argument("--lengths", type=int, nargs="*", default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--d_model", type=int, default=None)
    ap.add_argument("--n_layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--reencode_steps", type=int, default=None)
    ap.add_argument("--scan_method", default="ref")
    ap.add_argument("--out", default="decode.json")
    a = ap.parse_args()
    q = a.quick
    lengths = a.lengths or ([128, 256, 512] if q else [128, 256, 512, 1024, 2048, 4096])
    batch = a.batch or (4 if q else 8)
    d_model = a.d_model or (64 if q else 256)
    repeats = a.repeats or (3 if q else 5)
    reencode_steps = a.reencode_steps or (32 if q else 64)
    print(f"device={jax.devices()[0]} batch={batch} d_model={d_model} n_layers={a.n_layers} "
          f"vocab=256 greedy; tokens/s (median of {repeats}); re-encode rate from "
          f"{reencode_steps} steps on a fixed (B, L) buffer")  # fmt: skip
    print(f"{HEADER[0]:>6} " + " ".join(f"{h:>12}" for h in HEADER[1 : 1 + _N_RATES])
          + " " + " ".join(f"{h:>9}" for h in HEADER[1 + _N_RATES :]))  # fmt: skip
    rows = bench(lengths, batch, d_model, a.n_layers, repeats, reencode_steps, a.scan_method)
    out = {"device": str(jax.devices()[0]), "batch": batch, "d_model": d_model,
           "n_layers": a.n_layers, "repeats": repeats, "reencode_steps": reencode_steps,
           "scan_method": a.scan_method, "rows": rows}  # fmt: skip
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
