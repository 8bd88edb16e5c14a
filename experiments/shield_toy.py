"""README's toy table for the shield: point mass and wall, 5 seeds x 256 episodes, dynamics
uniform in the box ball (``adarl.shield_toy``; SAFETY_AND_ANALYSIS.md §1.5).

    python -m experiments.shield_toy

Seeds: ball-sample keys 100..104 and episode keys 200..204; verifier models: the true model plus
the nominal one, the nominal one alone, or the nominal one plus the ball's worst corner.
"""

import jax
import jax.numpy as jnp

from adarl import shield, shield_toy
from harness import stats

KEYS = ["violation_rate", "intervention_rate", "call_rate", "return", "us_per_step"]
MODES = (("unshielded", 1.0, 0), ("tau=0", 0.0, 0), ("tau=0.5,k=5", 0.5, 5))


def verifier_models(system, true):
    nominal = jnp.broadcast_to(system.nominal, true.shape)
    corner = jnp.broadcast_to(jnp.stack([system.nominal, shield_toy.WORST_CORNER]), (256, 2, 3))
    return {
        "true+nominal": jnp.stack([true, nominal], 1),
        "nominal only": nominal[:, None].repeat(2, 1),
        "nominal+worst corner": corner,
    }


def main() -> None:
    system, _, runner, ball = shield_toy.make_runner()
    rows: dict[tuple[str, str], list[dict]] = {}
    for seed in range(5):
        true = jax.vmap(ball.to_params)(ball.sample(jax.random.PRNGKey(100 + seed), 256))[:, 0]
        keys = jax.random.split(jax.random.PRNGKey(200 + seed), 256)
        for label, models in verifier_models(system, true).items():
            for mode, tau, every in MODES:
                if mode == "unshielded" and label != "true+nominal":
                    continue
                knobs = shield.Knobs(jnp.float32(tau), jnp.int32(every))
                args = (jnp.float32(1.0), jnp.float32(10.0), true, models, keys, knobs)
                runner.run(*args)  # compile and warm up outside the timing
                trace, dt = shield.timed(runner.run, *args)
                m = shield.metrics(trace)
                m["us_per_step"] = 1e6 * dt
                rows.setdefault((mode, label), []).append(m)
    print("| mode | verifier models | " + " | ".join(KEYS) + " |")
    print("|---|---|" + "---|" * len(KEYS))
    for (mode, label), ms in rows.items():
        cells = []
        for k in KEYS:
            v = [m[k] for m in ms]
            lo, hi = stats.bootstrap_ci(v)
            cells.append(f"{stats.iqm(v):.3g} [{lo:.3g}, {hi:.3g}]")
        print(f"| {mode} | {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
