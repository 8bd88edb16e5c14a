"""Where does the bf16 Pallas kernel differ from "ref" on hardware? Per output and gradient:
max abs error, share of elements beyond the test tolerance, relative L2 (pallas and associative).

    JAX_PLATFORMS=cuda python benchmarks/pallas_bf16_diag.py 1000   # L; H200 log: results/gpu/
"""

import sys

import jax.numpy as jnp
import numpy as np

sys.path.insert(0, "tests/ssm")  # the test file owns make_inputs/grad_tol: one recipe
import test_scan as ts  # noqa: E402

L = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
inputs = ts.make_inputs(0, 2, L, 256 if L > 100 else 8, 16, 1, jnp.bfloat16)
gy, gh = ts.cotangents(inputs)
args = ts.args_of(inputs)
y_r, last_r, g_r = ts.value_and_grads("ref", True)(args, gy, gh)
for method in ("pallas", "associative"):
    y, last, g = ts.value_and_grads(method, True, 64)(args, gy, gh)
    rows = [("y", y, y_r, ts.TOL[jnp.bfloat16]), ("last", last, last_r, ts.TOL[jnp.bfloat16])]
    for n, a, b in zip(ts.ARG_NAMES, g, g_r, strict=True):
        if a is not None:
            rows.append(("d" + n, a, b, ts.grad_tol(n, jnp.bfloat16, True)))
    for name, a, b, (rtol, atol) in rows:
        a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
        err = np.abs(a - b)
        bad = err > atol + rtol * np.abs(b)
        print(
            f"{method:11s} {name:12s} max_abs={err.max():.3g} max|ref|={np.abs(b).max():.3g} "
            f"bad={bad.mean():.2e} ({bad.sum()} of {bad.size}) rel_l2={np.linalg.norm(a - b) / np.linalg.norm(b):.2e}"
        )
