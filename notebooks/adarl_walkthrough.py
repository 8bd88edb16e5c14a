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
# # `adarl` walkthrough: randomised physics, Wasserstein balls and low-rank critics
#
# AdaRL (arXiv 2510.11899) trains SAC on environments whose physical parameters change from
# episode to episode, and periodically truncates the rank of its networks' hidden layers. This
# notebook shows the pieces on the MJX pendulum (a couple of minutes on a CPU, most of it one-time
# XLA compilation of the physics step):
#
# 1. a task and the physical parameters it exposes (`adarl.envs`, `adarl.params`);
# 2. distributions of parameters inside a Wasserstein ball around the nominal ones, and their
#    exact $W_p$ distance (`adarl.dynamics`);
# 3. a batched rollout that draws new parameters at every episode reset (`adarl.wrappers`);
# 4. the SVD projection of a factorised layer and the Eq. 14 rank rule (`adarl.lowrank`);
# 5. the command lines that train SAC/AdaRL with the experiment harness.
#
# **Colab:** set `REPO_URL` (or `WHEEL`, and `GPU`) in the first cell and run it, or open this
# notebook from a clone (`notebooks/adarl_walkthrough.ipynb`). The notebook is generated from
# `notebooks/adarl_walkthrough.py` by jupytext; edit the `.py` and regenerate.

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

from adarl import dynamics, envs, lowrank, networks, params, wrappers

print("JAX", jax.__version__, "on", jax.default_backend())
T0 = time.perf_counter()

# %% [markdown]
# ## 1. A task and its physical parameters
#
# `adarl.envs.make(name)` builds an MJX task with MuJoCo Playground's interface
# (`reset(key) -> State`, `step(state, action) -> State`, actions in [-1, 1]); `pendulum` is the
# Playground `PendulumSwingup`. Each task names a default set of physical parameters,
# `"<kind>:<element>"` strings resolved against the MuJoCo model. `param_spec` reads their nominal
# values and attaches a metric unit (`scale`, by default |nominal|, so distances are *relative*)
# and plausibility bounds. `apply_params(mjx_model, {name: value})` writes values into the model;
# it is pure and jit-able, so a batch of models is just a `vmap`.

# %%
print("some registered tasks:", [n for n in envs.names() if n.islower()])
env = envs.make("pendulum")
spec = params.param_spec(env)
print(f"observation size {env.observation_size}, action size {env.action_size}")
print(f"{'parameter':>14} {'nominal':>8} {'scale':>6}  kind")
for name, nominal, scale in zip(spec.names, spec.nominal, spec.scale, strict=True):
    kind = params.KINDS[name.partition(":")[0]]
    print(f"{name:>14} {nominal:8.3f} {scale:6.2f}  {kind.doc}")

heavy = params.apply_params(env.mjx_model, {"mass:pole": 2.0, "gravity": 5.0})
print(
    "body masses, nominal:",
    np.round(np.asarray(env.mjx_model.body_mass), 3),
    "-> edited:",
    np.round(np.asarray(heavy.body_mass), 3),
)
print("gravity, edited:", np.asarray(heavy.opt.gravity))

# %% [markdown]
# ## 2. Distributions in a Wasserstein ball
#
# AdaRL's robustness set is a Wasserstein ball $\{P : W_p(P, \hat P^\circ) \le \varepsilon\}$
# around the nominal dynamics $\hat P^\circ$, with the scaled ground metric
# $d(x, y) = \lVert (x - y)/\text{scale} \rVert_2$. `wasserstein_sampler(spec, eps, p)` returns
# n equal-weight particles $\theta_i = c + \text{scale}\odot\Delta_i$ with
# $\tfrac1n\sum_i \lVert\Delta_i\rVert^p \le \varepsilon^p$, so the coupling "particle i ↔ the
# centroid" already certifies $W_p \le \varepsilon$. How the budget is split is a choice:
# `allocation="equal"` puts every particle at the same distance, `"dirichlet"` (the default)
# gives a few far outliers of small total mass; the fraction of the budget $\varepsilon^p$ used
# is drawn uniformly (`budget="uniform"`, the default) or is all of it (`budget="boundary"`). Note that the ball is not a box: individual
# particles may sit well outside radius ε.
#
# Here a two-parameter spec (pole mass and gravity), so the whole distribution fits in a plot;
# `wasserstein_distance` computes the exact $W_2$ by optimal assignment.

# %%
spec2 = params.param_spec(env, ["mass:pole", "gravity"])
eps, n = 0.3, 256
nominal = spec2.nominal_params(1)  # the centroid: a point mass, dict name -> f32 (1,)

fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True, sharey=True)
for ax, allocation, seed in zip(axes, ("equal", "dirichlet"), (0, 1), strict=True):
    sampler = dynamics.make_sampler("wasserstein", spec2, eps=eps, p=2, allocation=allocation)
    sample = sampler(jax.random.PRNGKey(seed), n)  # dict name -> f32 (n,)
    w2 = dynamics.wasserstein_distance(sample, nominal, p=2, scale=spec2)
    ax.scatter(sample["mass:pole"], sample["gravity"], s=8, alpha=0.6, label=f"{n} particles")
    ax.plot(*spec2.nominal, "k*", ms=14, label="centroid (nominal)")
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200)) * eps
    ax.plot(
        spec2.nominal[0] + spec2.scale[0] * circle.real,
        spec2.nominal[1] + spec2.scale[1] * circle.imag,
        "k--",
        lw=1,
        label="radius ε",
    )
    ax.set_title(f"allocation={allocation!r}: $W_2$ = {w2:.3f} ≤ ε = {eps}")
    ax.set_xlabel("pole mass [kg]")
    print(f"{allocation:>9}: W_2 to the centroid = {w2:.4f} (eps = {eps})")
axes[0].set_ylabel("gravity [m/s²]")
axes[0].legend(fontsize=8, loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# The same function measures any two sets, e.g. how far apart two independent draws are, or how
# far a classic ±30% uniform box (domain randomisation) is from the nominal model:

# %%
wball = dynamics.make_sampler("wasserstein", spec2, eps=eps, p=2)
box = dynamics.make_sampler("box", spec2, width=0.3)
a, b = wball(jax.random.PRNGKey(2), 128), wball(jax.random.PRNGKey(3), 128)
print(f"W_2(two W-ball draws)       = {dynamics.wasserstein_distance(a, b, p=2, scale=spec2):.3f}")
box_sample = box(jax.random.PRNGKey(4), 128)
print(
    f"W_2(±30% box, nominal)      = "
    f"{dynamics.wasserstein_distance(box_sample, nominal, p=2, scale=spec2):.3f}"
)
print(
    f"W_1(±30% box, nominal)      = "
    f"{dynamics.wasserstein_distance(box_sample, nominal, p=1, scale=spec2):.3f}"
)

# %% [markdown]
# ## 3. A batched rollout with per-episode resampling
#
# `wrappers.wrap(env, sampler, episode_length)` gives a `BatchedEnv` that steps N copies in
# parallel (`reset(keys (N, 2))`, `step(state, actions (N, act))`). Every env keeps its own
# parameters in `state.info["params"]`, auto-resets when its episode ends and draws *new*
# parameters from the sampler at that reset only. Parameters are traced data, so new dynamics
# never trigger a recompile. Here: 4 envs, the pendulum's four default parameters drawn from a
# W-ball of radius 0.3, episodes of 10 steps, 40 steps of random actions; the envs start at
# different points of their episodes, so their resets are staggered.
#
# (The first call compiles the MJX physics step, which takes a few tens of seconds on a CPU.)

# %%
N, EPISODE, STEPS = 4, 10, 40
sampler = dynamics.make_sampler("wasserstein", spec, eps=0.3, p=2)
benv = wrappers.wrap(env, sampler, episode_length=EPISODE)
reset, step = jax.jit(benv.reset), jax.jit(benv.step)

state = reset(jax.random.split(jax.random.PRNGKey(0), N))
# Stagger the episodes: env i has already taken 3 i steps of its first episode.
state = state.replace(info={**state.info, "steps": jnp.arange(N, dtype=jnp.int32) * 3})
actions = jax.random.uniform(jax.random.PRNGKey(1), (STEPS, N, env.action_size), minval=-1.0)

t = time.perf_counter()
trace = {"mass:pole": [], "gravity": [], "cos_angle": [], "done": []}
for a in actions:
    state = step(state, a)
    trace["mass:pole"].append(np.asarray(state.info["params"]["mass:pole"]))
    trace["gravity"].append(np.asarray(state.info["params"]["gravity"]))
    trace["cos_angle"].append(np.asarray(state.obs[:, 0]))  # obs = (cos θ, sin θ, θ')
    trace["done"].append(np.asarray(state.done))
trace = {k: np.stack(v) for k, v in trace.items()}  # each (STEPS, N)
print(f"{STEPS} batched steps (incl. compile) in {time.perf_counter() - t:.1f} s")
print("episodes finished per env:", np.asarray(state.info["episode"]))
print("step compiled once:", step._cache_size() == 1)

# %%
fig, axes = plt.subplots(3, 1, figsize=(9, 6), sharex=True)
for i in range(N):
    (line,) = axes[0].step(
        np.arange(STEPS), trace["mass:pole"][:, i], where="post", label=f"env {i}"
    )
    axes[1].step(np.arange(STEPS), trace["gravity"][:, i], where="post", color=line.get_color())
    axes[2].plot(trace["cos_angle"][:, i], color=line.get_color())
    for t_done in np.flatnonzero(trace["done"][:, i]):
        for ax in axes:
            ax.axvline(t_done, color=line.get_color(), lw=0.6, ls=":")
axes[0].set_ylabel("pole mass [kg]")
axes[1].set_ylabel("gravity [m/s²]")
axes[2].set_ylabel("cos θ")
axes[2].set_xlabel("step (dotted: episode end of that env)")
axes[0].legend(fontsize=8, ncol=4)
axes[0].set_title("per-episode dynamics: parameters change only at each env's own resets")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Low-rank layers: SVD projection and the Eq. 14 rank rule
#
# AdaRL factorises each hidden→hidden layer as $W = A\,B$ through a bottleneck of width R with a
# 0/1 mask on the first `rank` columns (`networks.LowRankDense`), so a rank change edits an int,
# never a shape. Every $d_t$ gradient steps it takes the SVD $K = U\Sigma V^\top$ of the
# effective kernel and keeps
#
# $$\hat r = \max\Big\{\ell \ge 1 : \frac{\sum_{i \le \ell}\sigma_i}{\sum_i \sigma_i} \le \beta\Big\}
# \qquad\text{(Eq. 14, } \beta = 0.98\text{)},$$
#
# then projects the factors onto the best rank-$\hat r$ approximation (Eckart–Young):
# $A \leftarrow U_{:\hat r}\sqrt{\Sigma_{\hat r}}$, $B \leftarrow \sqrt{\Sigma_{\hat r}}\,V^\top_{:\hat r}$.
# `lowrank.project_layer` does both on a layer dict `{"A", "B", "bias"}`. Rules are registered
# by name (`eq14`, the Eq. 16 ablation `eq16`, and the squared-`energy` rule), and a rank never
# grows.
#
# Below: a 64×64 random matrix that is rank 8 plus noise (roughly what a trained layer looks
# like), factorised at full rank R = 64, then projected.

# %%
R = 64
k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
signal = jax.random.normal(k1, (R, 8)) @ jax.random.normal(k2, (8, R)) / np.sqrt(8)
kernel = signal + 0.15 * jax.random.normal(k3, (R, R))
A, B = networks.svd_factors(kernel, R)  # A: (64, R), B: (R, 64) with A @ B = kernel
layer = {"A": A, "B": B, "bias": jnp.zeros(R)}
rank = jnp.int32(R)

print("rank rules:", lowrank.rank_rule_names())
beta = 0.98
proj = lowrank.project_layer(layer, rank, "eq14", beta)
s = np.asarray(proj.singular_values)
r_hat = int(proj.rank)
err = float(jnp.linalg.norm(kernel - proj.a @ proj.b))
print(f"eq14 (beta={beta}): rank {R} -> {r_hat}")
print(
    f"||K - A'B'||_F = {err:.4f};  Eckart-Young optimum sqrt(sum_(i>r) s_i^2) = "
    f"{np.sqrt(np.sum(s[r_hat:] ** 2)):.4f}"
)
print(
    "factors are zero beyond the new rank:",
    bool(jnp.all(proj.a[:, r_hat:] == 0) and jnp.all(proj.b[r_hat:] == 0)),
)
for rule, beta_rule in (("eq14", 0.9), ("eq16", 0.1), ("energy", 0.9)):
    print(
        f"{rule:>6} (beta={beta_rule}): rank -> {int(lowrank.choose_rank(jnp.asarray(s), rank, rule, beta_rule))}"
    )

# %%
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.5))
ell = np.arange(1, len(s) + 1)
ax.semilogy(ell, s, ".-")
ax.axvline(r_hat, color="tab:red", ls="--", label=f"Eq. 14 rank {r_hat} (β = {beta})")
ax.set_xlabel(r"index $i$")
ax.set_ylabel(r"$\sigma_i$")
ax.set_title("singular values of the layer's kernel")
ax.legend()
ax2.plot(
    ell, np.cumsum(s) / s.sum(), ".-", label=r"$\sum_{i\leq\ell}\sigma_i / \sum_i\sigma_i$ (Eq. 14)"
)
ax2.plot(
    ell,
    np.cumsum(s**2) / np.sum(s**2),
    ".-",
    label=r"$\sum_{i\leq\ell}\sigma_i^2 / \sum_i\sigma_i^2$ (energy)",
)
ax2.axhline(beta, color="k", lw=0.8, label=f"β = {beta}")
ax2.axvline(r_hat, color="tab:red", ls="--")
ax2.set_xlabel(r"$\ell$")
ax2.set_title("cumulative spectrum")
ax2.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Eq. 14 sums singular values (a nuclear-norm criterion), so the noise tail, many small σ's,
# still carries a sizeable share of the sum: at β = 0.98 it keeps more than the 8 signal
# directions. The squared-energy curve saturates much earlier. During training the rule is
# applied to each critic's and the actor's factorised layers by `lowrank.project_mlp` /
# `project_critics`, inside the jitted update.

# %% [markdown]
# ## 5. Training runs
#
# Training goes through the experiment harness (metrics, TensorBoard, checkpoints with resume,
# plots, a robustness grid at the end). It is not run here; from the repository root:
#
# ```bash
# # seconds on a CPU: the smoke preset (what the tests run)
# python -m experiments.adarl --config experiments/configs/adarl.py:smoke --workdir /tmp/adarl_smoke
#
# # minutes on a CPU: CartpoleSwingup, pole/cart mass ±30% per episode, 5 vmapped seeds
# python -m experiments.adarl --config experiments/configs/adarl.py:cpu --workdir /tmp/adarl_cpu
#
# # the same with plain SAC or the Parseval baseline for comparison (everything else equal)
# python -m experiments.adarl --config experiments/configs/adarl.py:cpu --config.algo=sac \
#     --workdir /tmp/sac_cpu
# python -m experiments.adarl --config experiments/configs/adarl.py:cpu_parseval \
#     --workdir /tmp/parseval_cpu
# ```
#
# Paper-scale presets (`hopper`, `walker2d`, `ant`, `humanoid`, with the OMPO dynamics
# schedule) are meant for a GPU. The workdir then holds `metrics.jsonl`, `summary.json`,
# `return.png`, the rank and spectrum plots and `robustness.json/.png`.

# %%
print(f"notebook ran in {time.perf_counter() - T0:.1f} s")
