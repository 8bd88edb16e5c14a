"""RL-step time of the flowrl trainer split into generation, scoring and update: Mamba vs
Transformer policies, measured side by side in one process.

    python -m benchmarks.flowrl_step [--preset cpu] [--algo flowrl] [--repeats 5] [--out f.json]
        [--layers mamba,transformer,mamba:associative]

Phases (each a separately jitted function, warmed up, ``block_until_ready``, median of repeats):

* generation: P x G responses of R tokens with the LM's recurrent/cached ``generate``;
* scoring: exact verifier + reward + (TTRL-ready) answer extraction on the sampled responses;
* update: old/reference log-probs, advantages, then ``epochs x num_minibatches`` AdamW steps.

Prints a table (seconds and tokens/s per phase) and writes JSON, with the Transformer / Mamba
ratio per phase.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from experiments.configs import flowrl as flowrl_configs
from flowrl import trainer as flowrl_trainer


def _time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # warm-up (compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_layer(preset: str, algo: str, layer: str, repeats: int) -> dict:
    config = flowrl_configs.get_config(preset)
    config.rl.algo = algo
    config.model.layer, _, method = layer.partition(":")
    if method:
        config.model.scan_method = method
    config.sft.steps = 0
    tr = flowrl_trainer.build(config)
    state = tr.init_from_lm(jax.random.PRNGKey(1), tr.policy.init(jax.random.PRNGKey(0), 8).lm)
    P, G, R = config.rl.prompts_per_step, config.rl.group_size, tr.task.response_len
    index = jnp.arange(P)
    key = jax.random.PRNGKey(2)

    gen = jax.jit(lambda lm, k: tr.generate(lm, k, index))
    score = jax.jit(tr.score)
    prep = jax.jit(tr.prepare)
    learn = jax.jit(tr.learn)
    responses = gen(state.params.lm, key)
    groups = score(index, responses)
    valid = jnp.ones((P,), bool)

    def update():
        batch, _ = prep(state.params, state.ref_lm, groups, valid, key)
        return learn(state, batch)

    t_gen = _time(lambda: gen(state.params.lm, key), repeats)
    t_score = _time(lambda: score(index, responses), repeats)
    t_update = _time(update, repeats)
    tokens = P * G * R
    return {
        "layer": layer if method else config.model.layer,
        "sequences": P * G,
        "response_tokens": tokens,
        "generation_s": t_gen,
        "scoring_s": t_score,
        "update_s": t_update,
        "step_s": t_gen + t_score + t_update,
        "generation_tokens_per_s": tokens / t_gen,
        "step_tokens_per_s": tokens / (t_gen + t_score + t_update),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--algo", default="flowrl")
    parser.add_argument(
        "--layers", default="mamba,transformer", help="layer[:scan_method], comma separated"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="flowrl_step.json")
    args = parser.parse_args()
    rows = [
        bench_layer(args.preset, args.algo, layer, args.repeats) for layer in args.layers.split(",")
    ]
    print(f"backend={jax.default_backend()} preset={args.preset} algo={args.algo}")
    print(f"{'layer':<12}{'gen s':>9}{'score s':>9}{'update s':>10}{'step s':>9}{'gen tok/s':>11}")
    for r in rows:
        print(
            f"{r['layer']:<12}{r['generation_s']:>9.4f}{r['scoring_s']:>9.4f}{r['update_s']:>10.4f}"
            f"{r['step_s']:>9.4f}{r['generation_tokens_per_s']:>11.0f}"
        )
    result = {
        "backend": jax.default_backend(),
        "preset": args.preset,
        "algo": args.algo,
        "rows": rows,
    }
    base = rows[0]
    for r in rows[1:]:
        name = f"ratio_{r['layer']}_over_{base['layer']}"
        result[name] = {
            k: r[k] / base[k] for k in ("generation_s", "scoring_s", "update_s", "step_s")
        }
        print(name, {k: round(v, 3) for k, v in result[name].items()})
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
