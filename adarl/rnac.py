"""RNAC: robust natural actor-critic with PPO's trainer and two uncertainty sets.

Zhou, Liu, Cheng, Kalathil, Kumar, Tian, "Natural Actor-Critic for Robust Reinforcement Learning
with Function Approximation", NeurIPS 2023 (arXiv 2307.08875). As AdaRL ran it, RNAC is the
official repository's PPO-based trainer ([RNAC-code] ``train_rnac.py``, ADARL.md §7.3) with one
of two uncertainty sets, each needing only a simulator:

* **Double sampling (DS)**: from the current state draw ``m`` next states (the official code
  re-simulates with ``m`` fresh action-noise draws ``U[-5e-3, 5e-3]``), evaluate ``V`` on each,
  draw ``ridx ~ UniformInt{0..m}`` and continue from the argmin-value sample if ``ridx == m``,
  otherwise from sample ``ridx``. The worst sample is therefore taken with probability
  ``2/(m+1)`` (2/3 for m = 2), the adversarial reweighting ``α ∈ Δ_m`` within ``δ = 1/(2(m+1))``
  of uniform (:func:`ds_select`).
* **IPM**: for a critic ``V_w`` the worst case over ``{q : sup_f |q f - P°f| ≤ δ}`` lowers the
  backup by ``δ‖w‖``; the official code subtracts ``weight_reg · reg_norm`` from every TD residual,
  ``reg_norm = sqrt(Σ_l ‖W_l‖²_F + Σ_{l < last} ‖b_l‖²)`` over the critic's layers
  (:func:`ipm_norm`), on deterministic environments.

``algo="ppo"`` is the nominal set: plain PPO with identical code and hyperparameters.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import harness
from adarl import acting, checkpoints, robust_eval, sharding, tasks
from adarl import ppo as ppo_lib

# ---------------------------------------------------------------------------------------------
# Double sampling
# ---------------------------------------------------------------------------------------------


def ds_select(key: jax.Array, values: jax.Array) -> jax.Array:
    """RNAC-DS choice among ``m`` sampled next states, per environment.

    Args:
      key: PRNG key.
      values: f32 (m, N) critic values of the m candidate next states of N environments.

    Returns:
      i32 (N,) index of the chosen candidate: ``ridx ~ UniformInt{0..m}`` (inclusive of m, as
      ``np.random.randint(0, m+1)`` in ``train_rnac.py``); ``ridx == m`` selects the argmin.
    """
    m, n = values.shape
    ridx = jax.random.randint(key, (n,), 0, m + 1)
    worst = jnp.argmin(values, axis=0)
    return jnp.where(ridx == m, worst, ridx).astype(jnp.int32)


def _gather_candidate(x: jax.Array, idx: jax.Array, n: int) -> jax.Array:
    """Leaf (m, N, ...) -> (N, ...) picking candidate ``idx[i]`` for env i; env-shared leaves
    (no N axis) are identical across candidates, so candidate 0 is returned."""
    if x.ndim >= 2 and x.shape[1] == n:
        return x[idx, jnp.arange(n)]
    return x[0]


def _with_info(state: Any, info: dict) -> Any:
    return state.replace(info=info) if hasattr(state, "replace") else state._replace(info=info)


def _perturb_action_noise(env, env_state, actions, key, action_noise):
    """Official DS candidates: ``a + u``, ``u ~ U[-c, c]^A`` (the perturbed envs' step noise)."""
    noise = jax.random.uniform(key, actions.shape, minval=-action_noise, maxval=action_noise)
    return env_state, jnp.clip(actions + noise, -1.0, 1.0)


def _perturb_params(env, env_state, actions, key, action_noise):
    """Model-sampled DS candidates: one step under fresh physical parameters drawn from the
    training sampler (``env.sampler``), i.e. next states from perturbed models ``P ~ ball``."""
    del action_noise
    sampler = getattr(env, "sampler", None)
    if sampler is None:
        raise ValueError("config.rnac.ds_source='params' needs an env with a dynamics sampler")
    info = env_state.info
    n = actions.shape[0]
    params = sampler(key, n, episode=info.get("episode"))
    return _with_info(env_state, {**info, "params": params}), actions


# config.rnac.ds_source -> how the m candidate next states are generated.
DS_SOURCES: dict[str, Callable[..., tuple[Any, jax.Array]]] = {
    "action_noise": _perturb_action_noise,
    "params": _perturb_params,
}


def ds_uncertainty(
    m: int = 2, action_noise: float = 5e-3, source: str = "action_noise"
) -> ppo_lib.UncertaintySet:
    """The DS set: step to one of ``m`` re-simulations from the same state, chosen by
    :func:`ds_select` on the critic's values of the reached states.

    ``source`` (:data:`DS_SOURCES`): ``"action_noise"`` (official: ``env.step(s, clip(a + u_i))``,
    ``u_i ~ U[-c, c]^A``, ``c = action_noise``) or ``"params"`` (each candidate steps under a fresh
    draw of the training sampler's physical parameters; the episode keeps its own parameters
    afterwards). No simulator reset is needed in a functional simulator.
    """
    if not isinstance(m, int) or m < 1:
        raise ValueError(f"config.rnac.ds_m={m!r} must be an integer >= 1")
    if not action_noise >= 0:
        raise ValueError(f"config.rnac.ds_action_noise={action_noise!r} must be >= 0")
    if source not in DS_SOURCES:
        raise ValueError(f"config.rnac.ds_source={source!r}; choose one of {sorted(DS_SOURCES)}")
    perturb = DS_SOURCES[source]

    def step(env, env_state, actions, value_fn, key):
        keys = jax.random.split(key, m + 1)
        steps = []
        # A Python loop, not vmap: under vmap the wrapper's auto-reset `lax.cond` would turn into
        # a select that runs the reset at every step.
        for i in range(m):
            st, a = perturb(env, env_state, actions, keys[i], action_noise)
            nxt = env.step(st, a)
            if "params" in env_state.info:
                # Keep the episode's own parameters unless the step started a new episode.
                done = nxt.done > 0
                kept = jax.tree.map(
                    lambda new, old: jnp.where(done, new, old),
                    nxt.info["params"],
                    env_state.info["params"],
                )
                nxt = _with_info(nxt, {**nxt.info, "params": kept})
            steps.append(nxt)
        candidates = jax.tree.map(lambda *xs: jnp.stack(xs), *steps)
        # V of the reached state (before any auto-reset), as the official code evaluates s'_i.
        reached = candidates.info["final_obs"] if "final_obs" in candidates.info else candidates.obs
        values = value_fn(reached)  # (m, N)
        idx = ds_select(keys[m], values)
        n = actions.shape[0]
        return jax.tree.map(functools.partial(_gather_candidate, idx=idx, n=n), candidates)

    return ppo_lib.UncertaintySet(step=step, td_penalty=ppo_lib.NOMINAL.td_penalty)


# ---------------------------------------------------------------------------------------------
# IPM
# ---------------------------------------------------------------------------------------------


def ipm_norm(critic_params: Any) -> jax.Array:
    """``sqrt(Σ_l ‖W_l‖²_F + Σ_{l except the output layer} ‖b_l‖²)`` of a :class:`ppo.Critic`.

    Mirrors ``ppo_continuous.py: PPO_continuous.update`` of [RNAC-code], which sums the squared
    weights of every critic layer and the biases of all but the last; f32 ().
    """
    layers = critic_params["params"]
    total = jnp.zeros(())
    for name, layer in layers.items():
        total = total + jnp.sum(layer["kernel"] ** 2)
        if name != "out":
            total = total + jnp.sum(layer["bias"] ** 2)
    return jnp.sqrt(total)


def ipm_uncertainty(weight_reg: float = 1e-5) -> ppo_lib.UncertaintySet:
    """The IPM set: TD residual ``r + γV(s') - V(s) - weight_reg · ipm_norm(critic)``."""
    if not weight_reg >= 0:
        raise ValueError(f"config.rnac.ipm_weight_reg={weight_reg!r} must be >= 0")
    return ppo_lib.UncertaintySet(
        step=ppo_lib.nominal_step, td_penalty=lambda p: weight_reg * ipm_norm(p)
    )


# ---------------------------------------------------------------------------------------------
# Registry: algorithm name -> uncertainty set built from config.rnac
# ---------------------------------------------------------------------------------------------

ALGOS: harness.Registry[Callable[[Any], ppo_lib.UncertaintySet]] = harness.Registry("algorithm")
ALGOS.add("ppo", lambda rnac: ppo_lib.NOMINAL)
ALGOS.add(
    "rnac_ds",
    lambda rnac: ds_uncertainty(
        rnac.ds_m, rnac.ds_action_noise, rnac.get("ds_source", "action_noise")
    ),
)
ALGOS.add("rnac_ipm", lambda rnac: ipm_uncertainty(rnac.ipm_weight_reg))


def get_uncertainty(algo: str, rnac: Any) -> ppo_lib.UncertaintySet:
    """The uncertainty set of ``algo``; unknown names raise a ValueError listing ``ALGOS``."""
    return ALGOS.get(algo, "algo")(rnac)


# ---------------------------------------------------------------------------------------------
# Environments from config
# ---------------------------------------------------------------------------------------------


def make_task(config: Any):
    """(training env, evaluation env, ParamSpec) of ``config`` (:func:`adarl.tasks.make_task`)."""
    task = tasks.make_task(config)
    return task.train_env, task.eval_env, task.spec


def validate_config(config: Any) -> None:
    """Raises :class:`harness.ConfigError` (a ValueError) before anything compiles."""
    harness.check_choice(config, "algo", ALGOS.names())
    harness.check_int(config, "seed", lo=0)
    harness.check_int(config, "num_seeds", lo=1)
    harness.check_int(config, "checkpoint_every", lo=1)
    harness.check_int(config, "eval.episodes", lo=1)
    harness.check_int(config, "eval.every", lo=1)
    harness.check_int(config, "rnac.ds_m", lo=1)
    harness.check_range(config, "rnac.ds_action_noise", lo=0.0)
    harness.check_choice(config, "rnac.ds_source", sorted(DS_SOURCES))
    harness.check_range(config, "rnac.ipm_weight_reg", lo=0.0)
    harness.check_int(config, "env.episode_length", lo=1)
    harness.check_int(config, "env.action_repeat", lo=1)
    ppo_lib.validate_ppo_config(config.ppo)
    ppo_mesh(config)


def ppo_mesh(config: Any):
    """The mesh of ``config.parallel`` (None without one) after its checks: parallel envs and
    minibatches split over ``"data"`` (both must divide), parameters replicated, no FSDP."""
    divisible = {f"ppo.{f}": config.ppo[f] for f in ("num_envs", "minibatch_size")}
    return sharding.trainer_mesh(config, divisible, "PPO/RNAC (adarl.ppo)")


def make_train(config: Any):
    """``train(key) -> (PPOState, metrics over updates)`` for ``config.algo`` (pure, vmappable)."""
    validate_config(config)
    train_env, _, _ = make_task(config)
    uset = get_uncertainty(config.algo, config.rnac)
    return ppo_lib.make_train_fn(config.ppo, train_env, uset, ppo_mesh(config))


def _nominal_returns(eval_env, spec, policy_fn, key, episodes: int, episode_length: int):
    """f32 (episodes,) deterministic returns under nominal dynamics."""
    keys = jax.random.split(key, episodes)
    return acting.episode_returns(
        eval_env, policy_fn, keys, spec.nominal_params(episodes), episode_length
    )


def make_fns(config: Any):
    """(PPOFns, seeded ``init(key)`` vmapped over ``config.num_seeds``, eval env, spec)."""
    train_env, eval_env, spec = make_task(config)
    uset = get_uncertainty(config.algo, config.rnac)
    fns = ppo_lib.make_ppo(config.ppo, train_env, uset, ppo_mesh(config))
    num_seeds = config.num_seeds

    def init(key):
        return jax.vmap(fns.init)(jax.random.split(key, num_seeds))

    return fns, init, eval_env, spec


def train_and_evaluate(config: Any, workdir: str) -> dict[str, Any]:
    """Trains ``config.algo`` for ``config.num_seeds`` vmapped seeds with the experiment harness.

    Metrics are per seed ``(S,)`` (the harness logs their mean and ``/std``); the evaluation is
    ``config.eval.episodes`` deterministic episodes under the nominal dynamics.
    """
    validate_config(config)
    fns, init, eval_env, spec = make_fns(config)
    eval_key = jax.random.PRNGKey(config.seed + 10_000)
    episodes, episode_length = config.eval.episodes, robust_eval.num_steps(config)

    @jax.jit
    def eval_returns(states):
        return jax.vmap(
            lambda st: _nominal_returns(
                eval_env, spec, fns.policy(st), eval_key, episodes, episode_length
            )
        )(states)

    def evaluate(states):
        returns = eval_returns(states)  # (S, episodes)
        return {"eval/return": returns.mean(-1)}

    return harness.run_experiment(
        config,
        workdir,
        init=jax.jit(init),
        update=jax.jit(jax.vmap(fns.update)),
        num_updates=config.ppo.num_updates,
        seed=config.seed,
        checkpoint_every=config.checkpoint_every,
        evaluate=evaluate,
        eval_every=config.eval.every,
        plots={
            "return.png": harness.Plot(
                ["eval/return", "train/return"],
                title=f"{config.algo} on {config.env.name}: episode return",
                ylabel="episode return",
            )
        },
        desc=config.algo,
        headline=["eval/return", "train/return"],
        x_label="PPO update",
        progress=config.get("progress", True),
    )


def _load_states(workdir: str, step: int | None = None):
    config = checkpoints.read_config(workdir)
    fns, init, _, _ = make_fns(config)
    return checkpoints.load_state(workdir, init, step), fns, config


def load_policies(workdir: str, step: int | None = None) -> robust_eval.RunPolicies:
    """All seeds' deterministic policies as a :class:`adarl.robust_eval.RunPolicies`.

    params: ``(actor_params, obs_stats)`` with a leading seed axis; ``apply(params, obs)`` gives
    the Gaussian mean on raw observations (:func:`adarl.ppo.policy_apply`).
    """
    states, fns, config = _load_states(workdir, step)
    params = (states.actor_params, states.obs_stats)
    return robust_eval.RunPolicies(params, fns.apply, config, int(config.num_seeds))


def load_policy(workdir: str, seed_index: int = 0, step: int | None = None):
    """``(policy_fn, config)`` of a PPO/RNAC run: deterministic (mean) actions on raw obs.

    ``policy_fn``: f32 (..., O) -> f32 (..., A) in [-1, 1]; ``seed_index`` picks one of the
    vmapped seeds. Loads the latest checkpoint (or ``step``) via
    :func:`harness.load_state`.
    """
    states, fns, config = _load_states(workdir, step)
    if not 0 <= seed_index < config.num_seeds:
        raise ValueError(f"seed_index={seed_index} must be in [0, {config.num_seeds})")
    state = jax.tree.map(lambda x: x[seed_index], states)
    return jax.jit(fns.policy(state)), config
