"""Toy table (run from the worktree root: python docs_proposals/i21_toy_table.py): point mass + wall,
5 seeds x 256 episodes, dynamics uniform in the box ball."""

import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, ".")
sys.path.insert(1, "tests/adarl")
import test_shield as ts

from adarl import robust_eval, safety, shield
from adarl import windtunnel as wt

system = safety.point_mass_system()
con = safety.make_constraint("point_mass", wall=1.0)
runner = shield.make_runner(system, con, ts.CFG, ts.policy_apply, ts.critic_apply)
ball = wt.make_ball("box", ts.SPACE, 1.0)
rows = {}
for seed in range(5):
    true = jax.vmap(ball.to_params)(ball.sample(jax.random.PRNGKey(100 + seed), 256))[:, 0]
    keys = jax.random.split(jax.random.PRNGKey(200 + seed), 256)
    for label, models in (
        ("true+nominal", jnp.stack([true, jnp.broadcast_to(system.nominal, true.shape)], 1)),
        ("nominal only", jnp.broadcast_to(system.nominal, true.shape)[:, None].repeat(2, 1)),
        (
            "nominal+worst corner",
            jnp.broadcast_to(jnp.stack([system.nominal, jnp.array([1.3, 0.0, 0.3])]), (256, 2, 3)),
        ),
    ):
        for mode, tau, every in (
            ("unshielded", 1.0, 0),
            ("tau=0", 0.0, 0),
            ("tau=0.5,k=5", 0.5, 5),
        ):
            if mode == "unshielded" and label != "true+nominal":
                continue
            kn = shield.Knobs(jnp.float32(tau), jnp.int32(every))
            runner.run(jnp.float32(1.0), jnp.float32(10.0), true, models, keys, kn)  # warm
            tr, dt = shield.timed(
                runner.run, jnp.float32(1.0), jnp.float32(10.0), true, models, keys, kn
            )
            m = shield.metrics(tr)
            m["us_per_step"] = 1e6 * dt
            rows.setdefault((mode, label), []).append(m)
print(
    "| mode | verifier models | "
    + " | ".join(
        shield_keys := ["violation_rate", "intervention_rate", "call_rate", "return", "us_per_step"]
    )
    + " |"
)
for (mode, label), ms in rows.items():
    cells = []
    for k in shield_keys:
        v = [m[k] for m in ms]
        lo, hi = robust_eval.bootstrap_ci(v)
        cells.append(f"{robust_eval.iqm(v):.3g} [{lo:.3g}, {hi:.3g}]")
    print(f"| {mode} | {label} | " + " | ".join(cells) + " |")
print("traces:", len(runner.traces))
