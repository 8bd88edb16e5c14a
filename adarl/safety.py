"""Safety constraints as data, a point-mass-and-wall toy, and the learned safety critic.

R²AI (arXiv 2509.06786) pairs a *fast* safe model with a slow one; SAFETY_AND_ANALYSIS.md §1.5
(feature A2) makes the fast one "the policy plus a cheap learned safety critic Q_c(s, a), the
probability of violating a constraint within H steps". This module holds the pieces below the
shield (:mod:`adarl.shield`):

* :data:`CONSTRAINTS`: task name -> factory of a :class:`Constraint`, a violation predicate
  ``g(obs) <= 0`` (violated iff ``g > 0``) and a known-recoverable set, both on the observation
  (for these tasks the observation holds the constrained coordinates: cart position, torso
  height and angle, joint velocity, toy position);
* :class:`System` and :func:`point_mass_system`: the pure-JAX point mass and wall of the design
  reference's safety test (braking is recoverable by construction; CPU-fast), with the same
  ``reset/step`` shape as :func:`adarl.shield.mjx_system`;
* the safety critic: :class:`SafetyCritic` (Flax MLP -> logit), :func:`violation_labels`
  (``y_t = 1`` iff a violation occurs in steps ``t+1..t+H`` of the same episode) and
  :func:`fit_critic` (binary cross-entropy, optax Adam).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import harness

# ---------------------------------------------------------------------------------------------
# Constraints
# ---------------------------------------------------------------------------------------------


class Constraint(NamedTuple):
    """A per-task safety constraint on the observation.

    name: registry name; cost: ``g(obs f32 (obs,)) -> f32 ()``, violated iff ``g > 0``;
    recoverable: ``(obs) -> bool ()``, states from which the backup policy stays safe forever
    (the verifier's terminal set); backup: ``(obs) -> action f32 (act,)``, the backup policy π_b.
    """

    name: str
    cost: Callable[[jax.Array], jax.Array]
    recoverable: Callable[[jax.Array], jax.Array]
    backup: Callable[[jax.Array], jax.Array]


CONSTRAINTS: harness.Registry[Callable[..., Constraint]] = harness.Registry("constraint")


def _margin_recoverable(cost: Callable, margin: float) -> Callable:
    return lambda obs: cost(obs) <= -margin


@CONSTRAINTS.register("point_mass")
def point_mass_constraint(wall: float = 1.0, action_size: int = 1) -> Constraint:
    """Toy: position ``x = obs[0]`` must stay ``<= wall``; backup: full reverse thrust ``u = -1``;
    recoverable iff ``x <= wall`` and velocity ``obs[1] <= 0``. That set is invariant and safe
    under the backup whenever ``push < 1/mass`` (then ``v`` stays ``<= 0``), which holds in the
    whole toy ball."""
    cost = lambda obs: obs[0] - wall  # noqa: E731
    return Constraint(
        "point_mass",
        cost,
        lambda obs: (obs[0] <= wall) & (obs[1] <= 0.0),
        lambda obs: jnp.full((action_size,), -1.0),
    )


@CONSTRAINTS.register("cartpole")
def cartpole_constraint(limit: float = 1.0, margin: float = 0.1, action_size: int = 1):
    """Cart position bounds ``|x| <= limit`` (``obs[0]`` of Playground's CartpoleSwingup/Balance);
    backup: push against the cart velocity ``obs[3]`` (brake)."""
    cost = lambda obs: jnp.abs(obs[0]) - limit  # noqa: E731
    return Constraint(
        "cartpole",
        cost,
        lambda obs: (cost(obs) <= -margin) & (obs[0] * obs[3] <= 0.0),
        lambda obs: jnp.full((action_size,), -jnp.clip(2.0 * obs[3], -1.0, 1.0)),
    )


@CONSTRAINTS.register("pendulum")
def pendulum_constraint(max_speed: float = 6.0, margin: float = 1.0, action_size: int = 1):
    """Joint-velocity limit ``|ω| <= max_speed`` (``obs[2]`` of PendulumSwingup); backup: torque
    against ω."""
    cost = lambda obs: jnp.abs(obs[2]) - max_speed  # noqa: E731
    return Constraint(
        "pendulum",
        cost,
        _margin_recoverable(cost, margin),
        lambda obs: jnp.full((action_size,), -jnp.sign(obs[2])),
    )


@CONSTRAINTS.register("hopper")
def torso_constraint(
    min_height: float = 0.8, max_angle: float = 0.2, margin: float = 0.05, action_size: int = 3
):
    """Torso height and angle limits of the planar walkers (``obs[0]`` = z, ``obs[1]`` = angle):
    ``g = max(min_height - z, |angle| - max_angle)``; backup: zero torque."""

    def cost(obs):
        return jnp.maximum(min_height - obs[0], jnp.abs(obs[1]) - max_angle)

    return Constraint(
        "torso", cost, _margin_recoverable(cost, margin), lambda obs: jnp.zeros((action_size,))
    )


CONSTRAINTS.add("walker2d", lambda **kw: torso_constraint(**{"action_size": 6, **kw}))


def make_constraint(name: str, **kwargs: Any) -> Constraint:
    """The constraint registered under ``name`` (ConfigError listing the names if unknown)."""
    return CONSTRAINTS.get(name, "shield.constraint")(**kwargs)


# ---------------------------------------------------------------------------------------------
# A system the shield can step: pure-JAX toy here, MJX in adarl.shield.mjx_system
# ---------------------------------------------------------------------------------------------


class System(NamedTuple):
    """Single-env dynamics with explicit parameters θ f32 (d,) (traced, never recompiled).

    reset: ``(key, theta) -> state``; step: ``(theta, state, action f32 (act,)) -> state``;
    obs / reward / done: ``state -> f32 (obs,) / f32 () / f32 ()``; nominal: f32 (d,);
    names: parameter names; observation_size, action_size.
    """

    reset: Callable[[jax.Array, jax.Array], Any]
    step: Callable[[jax.Array, Any, jax.Array], Any]
    obs: Callable[[Any], jax.Array]
    reward: Callable[[Any], jax.Array]
    done: Callable[[Any], jax.Array]
    nominal: jax.Array
    names: tuple[str, ...]
    observation_size: int
    action_size: int


class PointMassState(NamedTuple):
    """x, v: f32 () position and velocity; reward: f32 () of the last step."""

    x: jax.Array
    v: jax.Array
    reward: jax.Array


POINT_MASS_PARAMS = ("mass", "damping", "push")


def point_mass_system(dt: float = 0.05, x0_range: Sequence[float] = (-1.0, -0.5)) -> System:
    """Point mass ``x' = x + dt·v``, ``v' = v + dt·(u/mass − damping·v + push)`` (semi-implicit
    Euler), ``u ∈ [-1, 1]``; θ = (mass, damping, push), nominal (1, 0.1, 0); reward ``x`` (the
    task pulls the mass toward the wall); starts at rest at ``x0 ~ U(x0_range)``."""

    def reset(key, theta):
        del theta
        x0 = jax.random.uniform(key, (), minval=x0_range[0], maxval=x0_range[1])
        return PointMassState(x0, jnp.zeros(()), jnp.zeros(()))

    def step(theta, state, action):
        mass, damping, push = theta[0], theta[1], theta[2]
        u = jnp.clip(action[0], -1.0, 1.0)
        v = state.v + dt * (u / mass - damping * state.v + push)
        x = state.x + dt * v
        return PointMassState(x, v, x)

    return System(
        reset=reset,
        step=step,
        obs=lambda s: jnp.stack([s.x, s.v]),
        reward=lambda s: s.reward,
        done=lambda s: jnp.zeros(()),
        nominal=jnp.array([1.0, 0.1, 0.0]),
        names=POINT_MASS_PARAMS,
        observation_size=2,
        action_size=1,
    )


# ---------------------------------------------------------------------------------------------
# Safety critic Q_c(s, a) = P(violation within H steps)
# ---------------------------------------------------------------------------------------------


class SafetyCritic(nn.Module):
    """MLP ``(obs f32 (..., o), action f32 (..., a)) -> logit f32 (...)`` of Q_c."""

    hidden: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        h = jnp.concatenate([obs, action], axis=-1)
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        return nn.Dense(1)(h)[..., 0]


def violation_labels(violated: jax.Array, done: jax.Array, horizon: int) -> jax.Array:
    """``y_t = 1`` iff ``violated`` holds at some step ``t+1..t+horizon`` of the same episode.

    Args:
      violated: bool (T, ...) constraint violated at the state reached by step t's action
        (index t is the transition t -> t+1; so step t's own label counts index t).
      done: bool (T, ...) episode ended at transition t (labels do not cross it).
      horizon: H ≥ 1.
    Returns: f32 (T, ...). Steps within H of the end of the array see fewer future steps.
    """

    def back(carry, x):
        # carry: steps until the next violation within this episode (large if none)
        v, d = x
        dist = jnp.where(v, 0, jnp.where(d, horizon + 1, carry + 1))
        return dist, dist

    init = jnp.full(violated.shape[1:], horizon + 1, jnp.int32)
    _, dist = jax.lax.scan(back, init, (violated, done), reverse=True)
    return (dist < horizon).astype(jnp.float32)


def critic_loss(params, apply, obs, actions, labels):
    """Binary cross-entropy of ``sigmoid(logit)`` against labels (mean over the batch)."""
    logits = apply(params, obs, actions)
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean()


def fit_critic(
    key: jax.Array,
    obs: jax.Array,
    actions: jax.Array,
    labels: jax.Array,
    *,
    hidden: Sequence[int] = (64, 64),
    steps: int = 500,
    lr: float = 3e-3,
    batch: int = 256,
) -> tuple[Any, Callable]:
    """Fits :class:`SafetyCritic` on flattened samples (n, o), (n, a), (n,); returns (params,
    apply) with ``apply(params, obs, action) -> logit``. One jitted ``lax.scan`` of Adam steps."""
    module = SafetyCritic(tuple(hidden))
    k_init, k_batch = jax.random.split(key)
    params = module.init(k_init, obs[:1], actions[:1])
    opt = optax.adam(lr)
    n = obs.shape[0]

    def step(carry, k):
        p, s = carry
        idx = jax.random.randint(k, (min(batch, n),), 0, n)
        loss, g = jax.value_and_grad(critic_loss)(p, module.apply, obs[idx], actions[idx],
                                                  labels[idx])  # fmt: skip
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), loss

    fit = jax.jit(lambda p, keys: jax.lax.scan(step, (p, opt.init(p)), keys))
    (params, _), _ = fit(params, jax.random.split(k_batch, steps))
    return params, module.apply
