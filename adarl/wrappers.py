"""Batched env with per-episode dynamics resampling (ADARL.md §8.4, options (a) and (b)).

``wrap(env, sampler)`` returns a :class:`BatchedEnv`: ``reset(keys (N, 2))`` and
``step(state, actions (N, act))`` are vmapped over N envs; each env keeps its physical
parameters in ``state.info["params"]`` (dict name -> f32 (N,)), steps with
``apply_params(env.mjx_model, params_i)``, and auto-resets when its episode ends, drawing new
parameters from the sampler *at that reset only*. Parameters are traced data, so changing them
never recompiles (checked by the tests through ``jax.jit(...)._cache_size()`` and
:attr:`BatchedEnv.trace_count`).

``state.info`` (all leading dim N):
  ``params``          dict name -> f32 (N,), parameters of the current episode.
  ``episode``         int32 (N,), index of the current episode of each env (0 at reset; the
                      OMPO schedule's i).
  ``steps``           int32 (N,), control steps taken in the current episode.
  ``truncation``      f32 (N,), 1.0 where the last step ended the episode by time limit only.
  ``episode_return``  f32 (N,), return of the current episode so far.
  ``last_return``, ``last_length``: return/length of each env's most recently finished episode
                      (0 before the first one); ``episode_done`` f32 (N,) marks the step they
                      were written.
  ``final_obs``       f32 (N, obs), the observation the last step reached *before* an auto-reset
                      (needed to bootstrap on truncation); equals ``obs`` when not done.
  ``fixed``           bool (N,), True for envs started by ``reset_with_params`` (they keep their
                      parameters across auto-resets).
  ``dyn_key``         (N, 2) uint32 key of the parameter sampler (same in every row).
``state.done`` is the done flag of the transition just taken (termination or time limit);
``state.obs`` after a done step is already the next episode's first observation.

What a Wasserstein-ball sampler guarantees here (:func:`adarl.dynamics.wasserstein_sampler`,
W_p in the spec's scaled units, radius ε around the centroid P̂):

* **Per joint draw.** Every call of the sampler draws N particles whose empirical measure Q_N
  satisfies W_p(Q_N, P̂) ≤ ε. At ``reset`` all N envs take one draw, so the batch at t = 0 is in
  the ball.
* **Per episode (marginal).** At an auto-reset a fresh joint draw is made and only the envs
  whose episode just ended take their particle of it. The particles of a draw are exchangeable,
  so the law of one env's parameters in one episode is E[Q_N], and by convexity of W_p^p
  W_p(E[Q_N], P̂)^p ≤ E[W_p(Q_N, P̂)^p] ≤ ε^p: each episode's parameters are a draw from a
  distribution inside the ball.
* **Not per instant.** The N parameter vectors in use at one moment come from different draws
  and are *not* one draw from the ball; with ``allocation="dirichlet"`` a single particle (hence
  a single episode) can sit up to n^{1/p}·ε from its atom (``allocation="equal"``: at most ε).
  Nor is the time-weighted distribution of parameters in use (long episodes weigh more).
* **Physical range.** Every drawn parameter is clipped into ``[spec.lower, spec.upper]``.

Brax/Playground's ``randomization_fn`` (one model per env slot for the whole run) stays
available through :func:`randomization_fn`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from mujoco import mjx

from adarl import envs as envs_lib
from adarl.dynamics import Sampler
from adarl.params import Params, ParamSpec, apply_params, param_spec

State = envs_lib.State


@dataclasses.dataclass
class BatchedEnv:
    """N copies of ``env`` with per-env, per-episode physical parameters.

    Attributes:
      env: the single env (MjxEnv interface).
      sampler: parameter sampler, or None (nominal model, nothing is written into it).
      spec: the sampler's ParamSpec (None without sampler).
      episode_length: time limit in control steps.
      action_repeat: env steps per wrapper step (rewards summed).
      trace_count: how many times ``step`` has been traced (compile guard for tests).
    """

    env: Any
    sampler: Sampler | None
    spec: ParamSpec | None
    episode_length: int
    action_repeat: int
    trace_count: int = 0

    # -- properties forwarded from the env ------------------------------------------------

    @property
    def observation_size(self) -> int:
        return self.env.observation_size

    @property
    def action_size(self) -> int:
        return self.env.action_size

    @property
    def mj_model(self):
        return self.env.mj_model

    @property
    def mjx_model(self) -> mjx.Model:
        return self.env.mjx_model

    @property
    def unwrapped(self):
        return self.env.unwrapped

    # -- single-env pieces (vmapped below) ------------------------------------------------

    def _model(self, params: Params) -> mjx.Model:
        return apply_params(self.env.mjx_model, params) if params else self.env.mjx_model

    def _reset_one(self, key: jax.Array, params: Params) -> State:
        model = self._model(params)
        with envs_lib.model_override(self.env, model):
            return self.env.reset(key)

    def _step_one(self, state: State, action: jax.Array, params: Params) -> State:
        model = self._model(params)
        with envs_lib.model_override(self.env, model):
            reward = jnp.zeros(())
            done = jnp.zeros(())
            for r in range(self.action_repeat):
                nxt = self.env.step(state, action)
                if r:  # freeze the state once done inside a repeat (none at the first)
                    nxt = jax.tree.map(lambda a, b: jnp.where(done > 0, a, b), state, nxt)
                reward = reward + jnp.where(done > 0, 0.0, nxt.reward)
                done = jnp.maximum(done, nxt.done)
                state = nxt
        return state.replace(reward=reward, done=done)

    # -- batched API ---------------------------------------------------------------------

    def _check_keys(self, keys: jax.Array) -> int:
        if keys.ndim != 2 or keys.shape[-1] != 2:
            raise ValueError(f"keys must be raw PRNG keys of shape (N, 2), got {keys.shape}")
        return int(keys.shape[0])

    def _draw(self, key: jax.Array, n: int, episode: jax.Array) -> Params:
        if self.sampler is None:
            return {}
        # Samplers clip already; this keeps any sampler (a user's, a schedule) physical.
        return self.spec.clip(self.sampler(key, n, episode=episode))

    def _start(self, keys: jax.Array, params: Params, fixed: bool, dyn_key: jax.Array) -> State:
        n = keys.shape[0]
        state = jax.vmap(self._reset_one)(keys, params)
        zeros_f = jnp.zeros((n,), jnp.float32)
        zeros_i = jnp.zeros((n,), jnp.int32)
        info = dict(state.info)
        info.update(
            params=params,
            episode=zeros_i,
            steps=zeros_i,
            truncation=zeros_f,
            episode_return=zeros_f,
            last_return=zeros_f,
            last_length=zeros_i,
            episode_done=zeros_f,
            final_obs=state.obs,
            fixed=jnp.full((n,), fixed),
            dyn_key=jnp.broadcast_to(dyn_key, (n, 2)),
            reset_key=jax.vmap(lambda k: jax.random.fold_in(k, 7))(keys),
        )
        return state.replace(info=info)

    def reset(self, keys: jax.Array) -> State:
        """Starts N episodes; parameters drawn from the sampler (episode index 0)."""
        n = self._check_keys(keys)
        dyn_key, draw_key = jax.random.split(jax.random.fold_in(keys[0], 0x5EED))
        params = self._draw(draw_key, n, jnp.zeros((n,), jnp.int32))
        return self._start(keys, params, False, dyn_key)

    def reset_with_params(self, keys: jax.Array, params: Params) -> State:
        """Starts N episodes under given parameters (dict name -> (N,)), kept at auto-resets."""
        n = self._check_keys(keys)
        if self.spec is None:
            spec_names = tuple(params)
            if spec_names:
                raise ValueError(
                    "this BatchedEnv has no sampler/spec; wrap(env, sampler=...) to set parameters"
                )
        else:
            self.spec.check(params, batch=n)
        params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
        return self._start(keys, params, True, jax.random.fold_in(keys[0], 0x5EED))

    def step(self, state: State, actions: jax.Array) -> State:
        """One control step for all N envs, with auto-reset and per-episode resampling."""
        self.trace_count += 1
        info = state.info
        n = info["steps"].shape[0]
        if actions.shape != (n, self.action_size):
            raise ValueError(
                f"actions must have shape ({n}, {self.action_size}), got {actions.shape}"
            )
        inner = state.replace(info={k: v for k, v in info.items() if k not in _WRAPPER_KEYS})
        nxt = jax.vmap(self._step_one)(inner, actions, info["params"])
        steps = info["steps"] + self.action_repeat
        timeout = steps >= self.episode_length
        terminated = nxt.done > 0
        done = terminated | timeout
        episode_return = info["episode_return"] + nxt.reward

        def select(a, b):
            mask = done.reshape((n,) + (1,) * (a.ndim - 1))
            return jnp.where(mask, a, b)

        def do_reset(nxt):
            # Fresh keys for every env; only the done ones take the new episode.
            keys = jax.vmap(jax.random.split)(info["reset_key"])
            reset_keys, next_keys = keys[:, 0], keys[:, 1]
            dyn_key, draw_key = jax.random.split(info["dyn_key"][0])
            episode = info["episode"] + 1
            new_params = self._draw(draw_key, n, episode)
            params = jax.tree.map(
                lambda new, old: jnp.where(done & ~info["fixed"], new, old),
                new_params,
                info["params"],
            )
            fresh = jax.vmap(self._reset_one)(reset_keys, params)
            fresh = jax.tree.map(lambda f, x: f.astype(x.dtype), fresh, nxt)
            merged = jax.tree.map(select, fresh, nxt)
            return merged, params, next_keys, jnp.broadcast_to(dyn_key, (n, 2))

        def no_reset(nxt):
            # The common step: no env is done, so nothing is reset or selected.
            return nxt, info["params"], info["reset_key"], info["dyn_key"]

        merged, params, reset_key, dyn_key = jax.lax.cond(jnp.any(done), do_reset, no_reset, nxt)
        done_f = done.astype(jnp.float32)
        new_info = dict(merged.info)
        new_info.update(
            params=params,
            episode=info["episode"] + done.astype(jnp.int32),
            steps=jnp.where(done, 0, steps),
            truncation=(timeout & ~terminated).astype(jnp.float32),
            episode_return=jnp.where(done, 0.0, episode_return),
            last_return=jnp.where(done, episode_return, info["last_return"]),
            last_length=jnp.where(done, steps, info["last_length"]),
            episode_done=done_f,
            final_obs=nxt.obs,
            fixed=info["fixed"],
            dyn_key=dyn_key,
            reset_key=reset_key,
        )
        return merged.replace(reward=nxt.reward, done=done_f, metrics=nxt.metrics, info=new_info)


def inner_state(state: State) -> State:
    """The batched single-env states inside a :class:`BatchedEnv` state (the wrapper's ``info``
    bookkeeping removed), as ``BatchedEnv.step`` hands them to the env; e.g. for a verifier that
    simulates ahead from them."""
    return state.replace(info={k: v for k, v in state.info.items() if k not in _WRAPPER_KEYS})


_WRAPPER_KEYS = (
    "params",
    "episode",
    "steps",
    "truncation",
    "episode_return",
    "last_return",
    "last_length",
    "episode_done",
    "final_obs",
    "fixed",
    "dyn_key",
    "reset_key",
)


def wrap(
    env: Any,
    sampler: Sampler | None = None,
    episode_length: int | None = 1000,
    action_repeat: int = 1,
) -> BatchedEnv:
    """Batched, auto-resetting env with per-episode parameters.

    Args:
      env: an env from :func:`adarl.envs.make`.
      sampler: from :func:`adarl.dynamics.make_sampler` (its spec must name parameters of this
        env's model), or None for the nominal model.
      episode_length: time limit in control steps; None takes the task's own.
      action_repeat: env steps per wrapper step.
    """
    if episode_length is None:
        episode_length = envs_lib.episode_length(env)
    if not isinstance(episode_length, int) or episode_length < 1:
        raise ValueError(f"episode_length must be a positive int, got {episode_length!r}")
    if not isinstance(action_repeat, int) or action_repeat < 1:
        raise ValueError(f"action_repeat must be a positive int, got {action_repeat!r}")
    if sampler is not None and not isinstance(sampler, Sampler):
        raise ValueError(f"sampler must be an adarl.dynamics.Sampler or None, got {sampler!r}")
    spec = None
    if sampler is not None:
        spec = sampler.spec
        # Validates every name against this env's model before anything compiles.
        param_spec(env, spec.names)
    return BatchedEnv(env, sampler, spec, episode_length, action_repeat)


def randomization_fn(sampler: Sampler):
    """Brax/Playground ``randomization_fn(mjx_model, rng) -> (model_v, in_axes)``.

    One parameter draw per env slot for the whole run (``rng`` has shape (N, 2); the first key
    seeds the joint draw so W-ball guarantees hold over the N slots). Plug into
    ``mujoco_playground.wrapper.wrap_for_brax_training(..., randomization_fn=...)`` or brax's
    ``wrap(..., randomization_fn=...)`` (ADARL.md §8.1-8.2).
    """

    def fn(mjx_model: mjx.Model, rng: jax.Array):
        n = rng.shape[0]
        params = sampler(rng[0], n, episode=jnp.zeros((n,), jnp.int32))
        # Leaves apply_params rewrites are new objects; untouched leaves are the input's own.
        flat_0, treedef = jax.tree_util.tree_flatten(mjx_model)
        flat_1 = treedef.flatten_up_to(apply_params(mjx_model, sampler.spec.nominal_params()))
        edited = [a is not b for a, b in zip(flat_0, flat_1, strict=True)]
        flat_v = treedef.flatten_up_to(jax.vmap(lambda p: apply_params(mjx_model, p))(params))
        leaves = [v if e else a for v, a, e in zip(flat_v, flat_0, edited, strict=True)]
        axes = [0 if e else None for e in edited]
        return (
            jax.tree_util.tree_unflatten(treedef, leaves),
            jax.tree_util.tree_unflatten(treedef, axes),
        )

    return fn
