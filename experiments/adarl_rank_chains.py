"""Eq. 14 rank chains on fixed 64x64 spectra (README, "AdaRL paper presets"; issue 14 item 5).

python -m experiments.adarl_rank_chains
"""

import jax.numpy as jnp
import numpy as np

from adarl import lowrank

D = 64


def chain(s, n, rule="eq14", beta=0.98):
    """Ranks after 0..n truncations, each choosing from the kept top-r singular values."""
    r, out = len(s), [len(s)]
    for _ in range(n):
        kept = jnp.asarray(np.pad(s[:r], (0, len(s) - r)))
        r = int(lowrank.choose_rank(kept, jnp.asarray(r), rule, beta))
        out.append(r)
    return out


def spectra():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(D, D)) / np.sqrt(D)
    b = rng.normal(size=(D, D)) / np.sqrt(D)
    out = {"init A.B (lecun 64x64)": np.linalg.svd(a @ b, compute_uv=False)}
    out["dense gaussian 64x64"] = np.linalg.svd(
        rng.normal(size=(D, D)) / np.sqrt(D), compute_uv=False
    )
    u = np.linalg.qr(rng.normal(size=(D, D)))[0]
    v = np.linalg.qr(rng.normal(size=(D, D)))[0]
    for k in (3, 7):
        sig = np.zeros(D)
        sig[:k] = 5.0
        w = u @ np.diag(sig) @ v.T + rng.normal(size=(D, D)) / np.sqrt(D) * 0.5
        out[f"rank-{k} signal (sv 5) + noise 0.5"] = np.linalg.svd(w, compute_uv=False)
    return out


def main():
    specs = spectra()
    for name, s in specs.items():
        for rule in ("eq14", "eq16", "energy"):
            c = chain(s, 10, rule)
            print(f"{name:34s} {rule:6s} 3 trunc: {c[:4]}  5 trunc: {c[5]}  10: {c[10]}")
    print("--- eq14 at other beta (3 / 5 / 10 truncations)")
    for name in ("init A.B (lecun 64x64)", *list(specs)[2:]):
        for beta in (0.9, 0.8):
            c = chain(specs[name], 10, "eq14", beta)
            print(f"{name:34s} beta={beta}: {c[:4]} 5: {c[5]} 10: {c[10]}")


if __name__ == "__main__":
    main()
