# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %%
# Set-up on Colab (skip it in a clone where `pip install -e .` has run). Point REPO_URL at a
# git URL of this repository (your fork), or WHEEL at a wheel built with
# `pip wheel --no-deps -w dist .` and uploaded to the session; GPU=True installs the CUDA
# build of jaxlib (Colab GPU runtime) instead of the CPU one.
REPO_URL = ""  # e.g. "https://github.com/<you>/adarl-ssm-flowrl.git"
WHEEL = ""  # e.g. "/content/adarl_ssm_flowrl-0.1.0-py3-none-any.whl"
GPU = False
if REPO_URL or WHEEL:
    import subprocess
    import sys

    extra = "[gpu]" if GPU else ""
    target = f"{WHEEL}{extra}" if WHEEL else f"adarl-ssm-flowrl{extra} @ git+{REPO_URL}"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", target], check=True)

# %% [markdown]
# # `flowrl` walkthrough: group advantages, the FlowRL loss, and a bandit with a known answer
#
# `flowrl` is a family of policy-gradient losses for sequence policies (GRPO, Dr.GRPO, DAPO, GSPO,
# CISPO, PPO, REINFORCE, SFT and FlowRL), all registered under one signature
# `loss_fn(LossInputs, LossConfig) -> (loss, metrics)`. This notebook
#
# 1. computes GRPO group advantages and the GRPO and FlowRL losses on a hand-made batch;
# 2. trains a one-step policy (a *bandit*) with both losses, where the answer is known in closed
#    form: FlowRL matches the reward-tilted reference $\pi_{ref}\,e^{\beta \hat r}/Z$ while GRPO
#    concentrates on the best answer;
# 3. measures the trained policies with the unbiased pass@k estimator.
#
# It runs in well under a minute on a CPU.
#
# **Colab:** set `REPO_URL` (or `WHEEL`, and `GPU`) in the first cell and run it, or open this
# notebook from a clone (`notebooks/flowrl_walkthrough.ipynb`). The notebook is generated from
# `notebooks/flowrl_walkthrough.py` by jupytext; edit the `.py` and regenerate.

# %%
import os
import pathlib
import shutil
import sys

# Without a GPU, tell JAX so it skips probing for accelerators; with one, leave JAX's choice.
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Use the clone's packages even when `pip install -e .` has not been run (or the kernel has not
# been restarted since): put the repository root (the folder holding setup.py) on the path.
_root = next(
    (p for p in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents] if (p / "setup.py").exists()),
    None,
)
if _root is not None and str(_root) not in sys.path:
    sys.path.insert(0, str(_root))

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from flowrl.advantages import advantage_names, compute_advantages, outcome_to_token_rewards
from flowrl.losses import LossInputs, default_loss_config, get_loss, loss_names
from flowrl.metrics import pass_at_k
from flowrl.types import AdvantageConfig, AdvantageInputs

print("JAX", jax.__version__, "on", jax.default_backend())
print("losses:", loss_names())
print("advantage estimators:", advantage_names())
T0 = time.perf_counter()

# %% [markdown]
# ## 1. GRPO advantages on a small batch
#
# A batch holds `B` sampled responses, padded to length `T`, from a few prompts; `group_ids`
# (int32[B]) says which prompt each response answers. An outcome reward (one number per
# response) is placed on the last response token by `outcome_to_token_rewards`, and the GRPO
# estimator turns it into the group z-score
#
# $$A_i = \frac{r_i - \mathrm{mean}_{g(i)}\, r}{\mathrm{std}_{g(i)}\, r + \epsilon},$$
#
# broadcast over the response's tokens (zero on padding). Here: 2 prompts × 4 responses.

# %%
B, T = 8, 5
group_ids = jnp.array([0, 0, 0, 0, 1, 1, 1, 1], jnp.int32)
rewards = jnp.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
lengths = jnp.array([5, 3, 4, 2, 5, 5, 1, 3])
mask = (jnp.arange(T)[None, :] < lengths[:, None]).astype(jnp.float32)  # f32[B, T]

adv_inputs = AdvantageInputs(outcome_to_token_rewards(rewards, mask), mask, group_ids)
adv = compute_advantages("grpo", adv_inputs, AdvantageConfig()).advantages  # f32[B, T]
print("reward  group  advantage per token")
for i in range(B):
    print(f"{float(rewards[i]):6.1f}  {int(group_ids[i]):5d}  {np.round(np.asarray(adv[i]), 3)}")

# %% [markdown]
# Group 0 has two correct answers out of four (A = ±0.866 with the N-1 std), group 1 one out of
# four (the single correct answer gets a large advantage, +1.5).
#
# ## 2. The GRPO and FlowRL losses on that batch
#
# Both losses read the same `LossInputs`: per-token log-probabilities under the current policy
# (`logp`), the behaviour policy that sampled the batch (`old_logp`) and the frozen reference
# (`ref_logp`), and the advantages. FlowRL (arXiv 2509.15207) also takes a learned
# $\log Z_\phi(x)$ per prompt and minimises the squared trajectory-balance residual
#
# $$\mathcal{L} = \mathrm{mean}_b\; w_b \Big(\log Z(x_b) + \tfrac{1}{|y_b|}\log\pi(y_b|x_b)
#   - \beta\,\hat r_b - \tfrac{1}{|y_b|}\log\pi_{ref}(y_b|x_b)\Big)^2,$$
#
# with $\hat r_b$ the response's group-normalised reward (its mean advantage) and $w_b$ a clipped,
# detached importance weight $\pi/\pi_{old}$. `default_loss_config(name)` holds each loss's
# published hyperparameters ($\beta = 15$ for FlowRL; clip 0.2 and KL 0.04 for GRPO). With
# $\beta = 15$ and z-scored rewards the residuals are large (|δ| ≈ 12 below) until the policy
# and $\log Z$ have adapted; the loss is a squared error, not a surrogate near zero like GRPO's.

# %%
k_old, k_ref, k_new = jax.random.split(jax.random.PRNGKey(0), 3)
old_logp = -jax.random.uniform(k_old, (B, T), minval=0.1, maxval=2.0)
ref_logp = old_logp + 0.1 * jax.random.normal(k_ref, (B, T))
logp = old_logp + 0.05 * jax.random.normal(k_new, (B, T))  # a slightly updated policy
log_z = jnp.array([0.5, -0.5])[group_ids]  # f32[B]: one log Z per prompt, shared by its group

batch_inputs = LossInputs(logp, mask, adv, old_logp=old_logp, ref_logp=ref_logp, log_z=log_z)
for name in ("grpo", "flowrl"):
    loss, metrics = get_loss(name)(batch_inputs, default_loss_config(name))
    shown = {k: round(float(v), 4) for k, v in sorted(metrics.items())}
    print(f"{name:>6}: loss = {float(loss):.4f}\n        {shown}")

# %% [markdown]
# The losses are plain functions of arrays, so `jax.grad` gives the policy gradient. FlowRL's
# gradient with respect to each sequence's log-probability is $2 w_b \delta_b / (B |y_b|)$ per
# token: responses whose residual $\delta_b$ is positive (too likely for their reward) are pushed
# down, the others up.

# %%
flowrl_cfg = default_loss_config("flowrl")
grad_logp = jax.grad(lambda lp: get_loss("flowrl")(batch_inputs._replace(logp=lp), flowrl_cfg)[0])(
    logp
)
print("d loss / d logp (FlowRL), first token of each response:")
print(np.round(np.asarray(grad_logp[:, 0]), 3))

# %% [markdown]
# ## 3. A bandit with a known answer
#
# One prompt, K = 5 answers with rewards `r`, a reference policy $\pi_{ref}$ = softmax of fixed
# logits, and responses of length 1. With the whole group {each answer once} in every batch,
# FlowRL's loss is zero exactly at
#
# $$\pi^*(y) = \frac{\pi_{ref}(y)\, e^{\beta \hat r(y)}}{Z}, \qquad
#   \log Z = \log \sum_y \pi_{ref}(y)\, e^{\beta \hat r(y)},$$
#
# a *reward-tilted* reference that keeps mass on every good answer. GRPO, trained on-policy with
# G = 16 samples per step, instead maximises the expected reward and piles its mass on the single
# best answer. (The same setting is asserted in `tests/flowrl/test_bandit.py`.)

# %%
K = 5
REWARDS = jnp.array([1.0, 0.8, 0.5, 0.0, 0.0])
REF_LOGITS = jnp.array([0.3, -0.5, 0.8, 0.1, -0.2])
BETA = 1.0
ref_logp_k = jax.nn.log_softmax(REF_LOGITS)


def group_advantage(rewards, group_ids):
    """GRPO advantage f32[G, 1] of length-1 responses."""
    m = jnp.ones((rewards.shape[0], 1))
    inputs = AdvantageInputs(outcome_to_token_rewards(rewards, m), m, group_ids)
    return compute_advantages("grpo", inputs).advantages


def train_flowrl(num_steps=1500, lr=0.05):
    r_hat = group_advantage(REWARDS, jnp.zeros(K, jnp.int32))  # f32[K, 1]
    cfg = default_loss_config("flowrl", beta=BETA, is_weight="one")
    opt = optax.adam(lr)

    def loss_fn(params):
        inputs = LossInputs(
            jax.nn.log_softmax(params["logits"])[:, None],
            jnp.ones((K, 1)),
            r_hat,
            ref_logp=ref_logp_k[:, None],
            log_z=jnp.full((K,), params["log_z"]),
        )
        return get_loss("flowrl")(inputs, cfg)[0]

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state)
        return (optax.apply_updates(params, updates), state), loss

    params = {"logits": REF_LOGITS, "log_z": jnp.zeros(())}
    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=num_steps)
    return params, r_hat[:, 0], losses


def train_grpo(key, num_steps=400, G=16, lr=0.05):
    cfg = default_loss_config("grpo", kl_coef=0.0)
    opt = optax.adam(lr)

    def step(carry, key):
        logits, state = carry
        answers = jax.random.categorical(key, logits, shape=(G,))
        adv = group_advantage(REWARDS[answers], jnp.zeros(G, jnp.int32))

        def loss_fn(lg):
            lp = jax.nn.log_softmax(lg)[answers][:, None]
            inputs = LossInputs(lp, jnp.ones((G, 1)), adv, old_logp=jax.lax.stop_gradient(lp))
            return get_loss("grpo")(inputs, cfg)[0]

        updates, state = opt.update(jax.grad(loss_fn)(logits), state)
        return (optax.apply_updates(logits, updates), state), jnp.mean(REWARDS[answers])

    (logits, _), mean_reward = jax.lax.scan(
        step, (REF_LOGITS, opt.init(REF_LOGITS)), jax.random.split(key, num_steps)
    )
    return logits, mean_reward


flow_params, r_hat, flow_losses = jax.jit(train_flowrl)()
grpo_logits, grpo_reward = jax.jit(train_grpo)(jax.random.PRNGKey(0))

pi_ref = jax.nn.softmax(REF_LOGITS)
pi_flow = jax.nn.softmax(flow_params["logits"])
pi_grpo = jax.nn.softmax(grpo_logits)
target = jax.nn.softmax(ref_logp_k + BETA * r_hat)
log_partition = jax.nn.logsumexp(ref_logp_k + BETA * r_hat)

print(f"FlowRL loss: {float(flow_losses[0]):.3e} -> {float(flow_losses[-1]):.3e}")
print(f"max |pi_FlowRL - target|   = {float(jnp.abs(pi_flow - target).max()):.2e}")
print(
    f"learned log Z = {float(flow_params['log_z']):.4f}, "
    f"log sum pi_ref e^(beta r_hat) = {float(log_partition):.4f}"
)
print(
    f"GRPO: pi(best answer) = {float(pi_grpo[0]):.3f}, "
    f"mean reward of the last 50 batches = {float(grpo_reward[-50:].mean()):.3f}"
)

# %%
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.4), gridspec_kw={"width_ratios": [3, 2]})
x = np.arange(K)
width = 0.2
bars = [
    (r"$\pi_{ref}$", pi_ref, "tab:gray"),
    (r"target $\pi_{ref} e^{\beta \hat r}/Z$", target, "tab:green"),
    ("FlowRL (trained)", pi_flow, "tab:blue"),
    ("GRPO (trained)", pi_grpo, "tab:red"),
]
for j, (label, probs, color) in enumerate(bars):
    ax.bar(x + (j - 1.5) * width, np.asarray(probs), width, label=label, color=color)
ax.set_xticks(x, [f"answer {i}\nr = {float(r):.1f}" for i, r in enumerate(REWARDS)])
ax.set_ylabel("probability")
ax.set_title("bandit: FlowRL matches the reward-tilted reference, GRPO concentrates")
ax.legend(fontsize=8)
ax2.semilogy(np.asarray(flow_losses))
ax2.set_xlabel("Adam step")
ax2.set_title("FlowRL loss (whole group each step)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. pass@k
#
# With `n` samples per prompt of which `c` are correct, the unbiased estimator of "at least one
# of k samples is correct" (Chen et al. 2021, eq. 1) is
#
# $$\text{pass@}k = 1 - \binom{n-c}{k} \Big/ \binom{n}{k}.$$
#
# `flowrl.metrics.pass_at_k(n, c, k)` computes it stably for any number of prompts at once. Call
# only the best answer (r = 1) correct. We draw n = 16 answers, 1000 times (as if from 1000
# prompts), from each policy; the mean estimate matches the exact value $1 - (1 - p_{correct})^k$
# (dashed).

# %%
n, num_prompts = 16, 1000
correct_answer = REWARDS == 1.0
ks = np.arange(1, n + 1)
fig, ax = plt.subplots(figsize=(6, 3.4))
policies = {"pi_ref": bars[0], "FlowRL": bars[2], "GRPO": bars[3]}
keys = jax.random.split(jax.random.PRNGKey(1), len(policies))
for (name, (label, probs, color)), key in zip(policies.items(), keys, strict=True):
    samples = jax.random.categorical(key, jnp.log(probs), shape=(num_prompts, n))
    num_correct = jnp.sum(correct_answer[samples], axis=-1)  # i32[prompts]
    estimate = [float(pass_at_k(n, num_correct, int(k)).mean()) for k in ks]
    p_correct = float(jnp.sum(jnp.where(correct_answer, probs, 0.0)))
    ax.plot(ks, estimate, "o-", ms=3, color=color, label=f"{label}: p(correct) = {p_correct:.2f}")
    ax.plot(ks, 1 - (1 - p_correct) ** ks, "--", color=color, lw=1)
    print(
        f"{name:>6}: pass@1 = {estimate[0]:.3f}, pass@4 = {estimate[3]:.3f}, "
        f"pass@16 = {estimate[-1]:.3f}"
    )
ax.set_xscale("log", base=2)
ax.set_xlabel("k")
ax.set_ylabel("pass@k")
ax.set_title("unbiased pass@k (solid) vs exact (dashed)")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# GRPO wins pass@1 by construction: it maximises the expected reward and nearly always answers
# the best one. The gap closes as k grows, because FlowRL's policy still puts a fair share of its
# mass on the best answer while spreading the rest over the other good ones (answers 1 and 2),
# where GRPO has collapsed: a reward-proportional policy trades a little pass@1 for diversity.

# %%
print(f"notebook ran in {time.perf_counter() - T0:.1f} s")
