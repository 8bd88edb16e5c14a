"""The one task builder: environment, parameter spec, training sampler and batched envs from a
run config's ``env`` and ``dynamics`` fields (shared by SAC/AdaRL, PPO/RNAC, the wind tunnel and
co-evolution).

``config.env``: ``name`` (registry :mod:`adarl.envs`), ``episode_length``, ``action_repeat``,
``overrides`` (dict for ``adarl.envs.make``, optional); ``config.dynamics``: ``params`` (names,
empty for the env's default set), ``sampler`` (registry :data:`adarl.dynamics.SAMPLERS`) and
``kwargs``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from adarl import dynamics, envs, params, wrappers


class Task(NamedTuple):
    """train_env: batched env drawing dynamics from the configured sampler; eval_env: batched env
    under the nominal dynamics that carries the spec (so ``reset_with_params`` accepts
    parameters); spec: the task's ``adarl.params.ParamSpec``; observation_size, action_size."""

    train_env: Any
    eval_env: Any
    spec: params.ParamSpec
    observation_size: int
    action_size: int


def make_task(config: Any, *, train_sampler: bool = True) -> Task:
    """Builds the task of ``config`` (see module docstring).

    ``train_sampler=False`` skips building the configured training sampler (``train_env`` is then
    the nominal env), for evaluating a finished run.
    """
    env = envs.make(config.env.name, **dict(config.env.get("overrides", {}) or {}))
    spec = params.param_spec(env, tuple(config.dynamics.params) or None)
    nominal = dynamics.nominal_sampler(spec)
    sampler = (
        dynamics.make_sampler(config.dynamics.sampler, spec, **dict(config.dynamics.kwargs))
        if train_sampler
        else nominal
    )
    kw = dict(episode_length=config.env.episode_length, action_repeat=config.env.action_repeat)
    return Task(
        wrappers.wrap(env, sampler=sampler, **kw),
        wrappers.wrap(env, sampler=nominal, **kw),
        spec,
        int(env.observation_size),
        int(env.action_size),
    )
