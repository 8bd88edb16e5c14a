"""FlowRL's toy contrast: exact KL to the reward-tilted target pi_ref exp(beta r) / Z for FlowRL
(raw reward and the official z-scored r_hat) vs GRPO, over seeds (flowrl/toy.py).

    python -m experiments.flowrl_toy --workdir results/flowrl/toy [--seeds 5] [--steps 500]

Writes ``toy.json`` (config, per-seed curves, final KL as IQM with a 95% bootstrap CI) and
``toy.png`` (median KL curve with the min-max band over seeds) to ``--workdir``.
"""

from __future__ import annotations

import json
import os

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from flowrl import toy  # noqa: E402
from harness.stats import bootstrap_ci, iqm  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Output directory.")
flags.DEFINE_integer("seeds", 5, "Sampling seeds.")
flags.DEFINE_integer("steps", 500, "Updates per run.")
flags.DEFINE_float("beta", 3.0, "Target temperature beta.")
flags.DEFINE_list("methods", ["flowrl", "flowrl_zscore", "grpo"], "Methods (flowrl.toy.METHODS).")
flags.mark_flags_as_required(["workdir"])


def run(config, methods, num_seeds) -> dict:
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    out = {"config": config.to_dict(), "methods": {}}
    for method in methods:
        curves = jax.jit(jax.vmap(toy.make_toy_train(config, method)))(keys)
        kl, reward = np.asarray(curves.kl), np.asarray(curves.reward)
        final = kl[:, -1]
        out["methods"][method] = {
            "kl": kl.tolist(),
            "reward": reward.tolist(),
            "final_kl_iqm": iqm(final),
            "final_kl_ci95": bootstrap_ci(final),
            "final_reward_iqm": iqm(reward[:, -1]),
        }
    task = toy.make_task(config)
    out["start_kl"] = float(toy.kl_to_target(task.ref_logp, task))
    out["target_reward"] = float(np.sum(np.exp(task.target_logp) * task.reward))
    return out


def plot(result, path) -> None:
    cfg = result["config"]
    steps = np.arange(cfg["steps"] // cfg["log_every"] + 1) * cfg["log_every"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, r in result["methods"].items():
        kl = np.maximum(np.asarray(r["kl"]), 1e-8)  # float round-off gives tiny negatives
        ax.plot(steps, np.median(kl, 0), label=method)
        ax.fill_between(steps, kl.min(0), kl.max(0), alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("update")
    ax.set_ylabel("KL(pi || pi_ref exp(beta r)/Z) (nats)")
    ax.set_title(f"Toy bandit, K={cfg['num_answers']}, beta={cfg['beta']}, G={cfg['group_size']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = toy.default_config()
    config.steps = FLAGS.steps
    config.beta = FLAGS.beta
    result = run(config, FLAGS.methods, FLAGS.seeds)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    with open(os.path.join(FLAGS.workdir, "toy.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(result, os.path.join(FLAGS.workdir, "toy.png"))
    print(f"start KL {result['start_kl']:.3f}; target E[r] {result['target_reward']:.3f}")
    for method, r in result["methods"].items():
        lo, hi = r["final_kl_ci95"]
        print(
            f"{method}: final KL IQM {r['final_kl_iqm']:.4f} [{lo:.4f}, {hi:.4f}], "
            f"E[r] {r['final_reward_iqm']:.3f}"
        )


if __name__ == "__main__":
    app.run(main)
