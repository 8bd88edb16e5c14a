"""Safety wind tunnel: search an uncertainty set for the dynamics that minimise a frozen policy's return.

R²AI (arXiv 2509.06786) proposes a "safety wind tunnel" of adversarial simulation; this module is
its control version (SAFETY_AND_ANALYSIS.md §1.4, feature A1). The frozen policy enters only
through ``return_fn(theta f32 (n, d), keys (n, 2)) -> returns f32 (n,)`` (see
:func:`adarl.robust_eval.make_return_fn`), so pure-JAX toy systems and MJX tasks are searched by
the same code.

Search variable and uncertainty sets (:data:`BALLS`). Parameters are searched in scaled units
``x`` around the centroid ``c`` (the spec's nominal values, unit ``spec.scale``), and mapped to
physical values by ``θ = clip(c + scale ⊙ x, lower, upper)`` (plausibility clipping):

* ``box``: the L∞ ball ``‖x‖_∞ ≤ ε`` (RRLS-style uncertainty sets); projection = clip.
* ``l2``: ``‖x‖_2 ≤ ε``; projection = radial rescale.
* ``wasserstein``: a W₂ ball of radius ε around an empirical centroid ``P = {c_i}`` (m atoms,
  e.g. training domain-randomisation samples). Moving particles ``c_i → c_i + Δ_i`` gives
  ``W₂(Q, P)² ≤ (1/m)Σ‖Δ_i‖²``, so ``‖Δ‖_F ≤ √m·ε`` is a feasible inner approximation whose
  projection is one rescale, and the objective is the mean return over the m particles. **This
  particle (Monge) restriction yields a lower bound on the true worst case.** With one atom it is
  the l2 ball.

Searchers (:data:`SEARCHERS`), all jitted and deterministic under a key, with common random
numbers (the same evaluation keys for every candidate):

* ``random``: uniform samples in the ball (also gives CVaR over the ball);
* ``cmaes``: CMA-ES (``evosax.algorithms.CMA_ES``, evosax 0.3; candidates projected before
  evaluation, i.e. Lamarckian repair), the default for contact-rich simulators;
* ``grad``: projected gradient descent on the return, ``x ← Π(x - η ε g/‖g‖)``, through the
  differentiable rollout (MJX with ``impl="jax"``); contact gradients are unreliable, so it is
  best on smooth systems.

The report gives the nominal return, the worst case found (parameters, distance, searcher),
CVaR_α of the return under uniform sampling in the ball, the failure cases (parameters, seed,
return) and a plot of return against distance from the centroid. :func:`sweep` runs increasing
radii with each radius' search seeded by the previous worst point, so the reported worst case is
non-increasing in ε (the balls are nested). :func:`adarl.dynamics.failure_sampler` turns found
failures into a dynamics sampler (registered as ``"windtunnel"`` in :mod:`adarl.dynamics`) so training can use
them.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import harness
from adarl import loaders, robust_eval, sharding, tasks

ReturnFn = Callable[[jax.Array, jax.Array], jax.Array]  # (theta (n, d), keys (n, 2)) -> (n,)


class Space(NamedTuple):
    """Parameter space: names, centroid ``center``, ``scale``, ``lower``/``upper`` bounds, all
    f64 (d,). :class:`adarl.params.ParamSpec` converts with :func:`space_from_spec`."""

    names: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    @property
    def dim(self) -> int:
        return len(self.names)


def space_from_spec(spec: Any, names: Sequence[str] | None = None) -> Space:
    """The search space over ``names`` (default all) of an :class:`adarl.params.ParamSpec`;
    unknown names raise ValueError."""
    names = tuple(names or spec.names)
    unknown = [n for n in names if n not in spec.names]
    if unknown:
        raise ValueError(f"config.params {unknown} are not parameters of the run: {spec.names}")
    idx = [spec.names.index(n) for n in names]
    return Space(names, *(np.asarray(a, np.float64)[idx] for a in (
        spec.nominal, spec.scale, spec.lower, spec.upper)))  # fmt: skip


def subspace_return_fn(full_return_fn, spec, names):
    """``return_fn(theta (n, k), keys, policy_params)`` searching ``names`` only (the other
    parameters stay nominal) from a return function over full parameter vectors (n, d)."""
    idx = np.array([spec.names.index(n) for n in names])
    nominal = jnp.asarray(spec.nominal, jnp.float32)

    def return_fn(theta, keys, policy_params):
        full = jnp.broadcast_to(nominal, (theta.shape[0], spec.dim)).at[:, idx].set(theta)
        return full_return_fn(full, keys, policy_params)

    return return_fn


# ---------------------------------------------------------------------------------------------
# Uncertainty sets
# ---------------------------------------------------------------------------------------------


class Ball(NamedTuple):
    """An uncertainty set over a flat search vector ``x`` f32 (D,).

    name, radius; dim: D; atoms: f32 (m, d) centroid particles (m = 1 except ``wasserstein``);
    project: x -> nearest feasible x; sample: (key, n) -> f32 (n, D) uniform in the set;
    distance: x -> f32 () distance from the centroid (scaled units; a W₂ upper bound for
    ``wasserstein``); to_params: x -> physical θ f32 (m, d).
    """

    name: str
    radius: float
    dim: int
    atoms: jax.Array
    project: Callable[[jax.Array], jax.Array]
    sample: Callable[[jax.Array, int], jax.Array]
    distance: Callable[[jax.Array], jax.Array]
    to_params: Callable[[jax.Array], jax.Array]


def _physical(space: Space, atoms: jax.Array):
    scale = jnp.asarray(space.scale, jnp.float32)
    lo, hi = jnp.asarray(space.lower, jnp.float32), jnp.asarray(space.upper, jnp.float32)

    def to_params(x):
        delta = x.reshape(atoms.shape)
        return jnp.clip(atoms + scale * delta, lo, hi)

    return to_params


def _l2_project(x, r):
    norm = jnp.linalg.norm(x)
    return jnp.where(norm > r, x * (r / jnp.maximum(norm, 1e-30)), x)


def _l2_sample(key, n, dim, r):
    k_dir, k_rad = jax.random.split(key)
    d = jax.random.normal(k_dir, (n, dim))
    d = d / jnp.maximum(jnp.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
    u = jax.random.uniform(k_rad, (n, 1)) ** (1.0 / dim)
    return d * u * r


def box_ball(space: Space, radius: float, atoms: Any = None) -> Ball:
    """L∞ ball ``‖x‖_∞ ≤ ε`` around the centroid."""
    del atoms
    c = jnp.asarray(space.center, jnp.float32)[None]
    return Ball(
        "box",
        float(radius),
        space.dim,
        c,
        project=lambda x: jnp.clip(x, -radius, radius),
        sample=lambda key, n: jax.random.uniform(
            key, (n, space.dim), minval=-radius, maxval=radius
        ),
        distance=lambda x: jnp.max(jnp.abs(x)),
        to_params=_physical(space, c),
    )


def l2_ball(space: Space, radius: float, atoms: Any = None) -> Ball:
    """Euclidean ball ``‖x‖_2 ≤ ε`` (the W₂ ball around a point mass)."""
    del atoms
    c = jnp.asarray(space.center, jnp.float32)[None]
    return Ball(
        "l2",
        float(radius),
        space.dim,
        c,
        project=lambda x: _l2_project(x, radius),
        sample=lambda key, n: _l2_sample(key, n, space.dim, radius),
        distance=lambda x: jnp.linalg.norm(x),
        to_params=_physical(space, c),
    )


def wasserstein_ball(space: Space, radius: float, atoms: Any = None) -> Ball:
    """Particle W₂ ball around ``atoms`` (m, d) physical (default: the centroid alone)."""
    a = np.asarray(space.center if atoms is None else atoms, np.float32).reshape(-1, space.dim)
    m = a.shape[0]
    r = math.sqrt(m) * radius  # ‖Δ‖_F ≤ √m ε  ⇒  W₂ ≤ ε
    return Ball(
        "wasserstein",
        float(radius),
        m * space.dim,
        jnp.asarray(a),
        project=lambda x: _l2_project(x, r),
        sample=lambda key, n: _l2_sample(key, n, m * space.dim, r),
        distance=lambda x: jnp.linalg.norm(x) / math.sqrt(m),
        to_params=_physical(space, jnp.asarray(a)),
    )


BALLS: dict[str, Callable[..., Ball]] = {
    "box": box_ball,
    "l2": l2_ball,
    "wasserstein": wasserstein_ball,
}


def make_ball(name: str, space: Space, radius: float, atoms: Any = None) -> Ball:
    if name not in BALLS:
        raise ValueError(f"unknown ball {name!r}; registered: {sorted(BALLS)}")
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    return BALLS[name](space, float(radius), atoms)


# ---------------------------------------------------------------------------------------------
# Objective
# ---------------------------------------------------------------------------------------------


def make_objective(return_fn: ReturnFn, ball: Ball, keys: jax.Array, mesh: Any = None):
    """``f(X f32 (P, D)) -> f32 (P,)``: mean return over the m particles and E episode keys.

    The same ``keys`` (E, 2) are used for every candidate (common random numbers), so the
    objective is a deterministic function of ``x``. ``mesh``: the P·m·E candidate dynamics are
    split over its ``"data"`` axis (:mod:`adarl.sharding`; E must divide over it).
    """
    m, d = ball.atoms.shape
    e = keys.shape[0]

    def objective(xs):
        p = xs.shape[0]
        theta = jax.vmap(ball.to_params)(xs)  # (P, m, d)
        theta = jnp.broadcast_to(theta[:, :, None], (p, m, e, d)).reshape(-1, d)
        k = jnp.broadcast_to(keys[None, None], (p, m, e, 2)).reshape(-1, 2)
        theta, k = sharding.data(mesh, (theta, k))
        return return_fn(theta, k).reshape(p, m * e).mean(axis=1)

    return objective


class Trace(NamedTuple):
    """Every evaluated candidate: x f32 (T, D), returns f32 (T,), searcher i32 (T,) (index into
    the searchers run)."""

    x: jax.Array
    returns: jax.Array
    searcher: jax.Array


# ---------------------------------------------------------------------------------------------
# Searchers: (objective, ball, key, **cfg) -> (x (T, D), returns (T,))
# ---------------------------------------------------------------------------------------------


def random_search(objective, ball: Ball, key, *, num_samples: int = 256, batch: int = 64):
    """Uniform samples in the ball, evaluated in batches of ``batch``."""
    n_batches = max(1, -(-num_samples // batch))
    xs = ball.sample(key, n_batches * batch).reshape(n_batches, batch, ball.dim)
    rets = jax.lax.map(objective, xs)
    return xs.reshape(-1, ball.dim), rets.reshape(-1)


def cmaes_search(
    objective,
    ball: Ball,
    key,
    *,
    popsize: int = 16,
    generations: int = 16,
    sigma: float = 0.5,
):
    """CMA-ES (evosax 0.3 ``CMA_ES``: ``init(key, mean, params)``, ``ask``, ``tell``) minimising
    the return; ``std_init = sigma · ε``, mean at the centroid; candidates are projected."""
    from evosax.algorithms import CMA_ES

    es = CMA_ES(population_size=popsize, solution=jnp.zeros((ball.dim,)))
    params = es.default_params.replace(std_init=jnp.asarray(sigma * max(ball.radius, 1e-8)))
    k_init, k_run = jax.random.split(key)
    state = es.init(k_init, jnp.zeros((ball.dim,)), params)

    def generation(state, k):
        k_ask, k_tell = jax.random.split(k)
        pop, state = es.ask(k_ask, state, params)
        pop = jax.vmap(ball.project)(pop)
        fit = objective(pop)
        state, _ = es.tell(k_tell, pop, fit, state, params)
        return state, (pop, fit)

    _, (xs, rets) = jax.lax.scan(generation, state, jax.random.split(k_run, generations))
    return xs.reshape(-1, ball.dim), rets.reshape(-1)


def grad_search(
    objective,
    ball: Ball,
    key,
    *,
    restarts: int = 4,
    steps: int = 32,
    lr: float = 0.2,
):
    """Projected normalised-gradient descent on the return from the centroid and random starts.

    ``x ← Π(x − lr·ε·g/‖g‖)``, ``g = ∇_x f(x)`` through the differentiable rollout.
    """
    starts = ball.sample(key, restarts)
    starts = starts.at[0].set(0.0)

    def f(x):
        return objective(x[None])[0]

    grad = jax.value_and_grad(f)

    def step(xs, _):
        vals, gs = jax.vmap(grad)(xs)
        gs = jnp.where(jnp.isfinite(gs), gs, 0.0)
        norm = jnp.linalg.norm(gs, axis=-1, keepdims=True)
        new = xs - lr * max(ball.radius, 1e-8) * gs / jnp.maximum(norm, 1e-12)
        return jax.vmap(ball.project)(new), (xs, vals)

    last, (xs, vals) = jax.lax.scan(step, starts, None, length=steps)
    last_vals = objective(last)
    xs = jnp.concatenate([xs.reshape(-1, ball.dim), last], axis=0)
    return xs, jnp.concatenate([vals.reshape(-1), last_vals])


SEARCHERS: dict[str, Callable[..., tuple[jax.Array, jax.Array]]] = {
    "random": random_search,
    "cmaes": cmaes_search,
    "grad": grad_search,
}


def check_searchers(names: Sequence[str]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in SEARCHERS]
    if unknown or not names:
        raise ValueError(
            f"unknown searchers {unknown or list(names)}; registered: {sorted(SEARCHERS)}"
        )
    return tuple(names)


# ---------------------------------------------------------------------------------------------
# Search and report
# ---------------------------------------------------------------------------------------------


class Result(NamedTuple):
    """Outcome of one wind-tunnel search (host numpy).

    nominal_return: return at the centroid; worst_return / worst_x (D,) / worst_params (m, d)
    physical / worst_distance / worst_searcher; cvar: CVaR_α over uniform samples in the ball
    (NaN if ``random`` did not run); trace: every evaluated candidate; radius, ball name.
    """

    nominal_return: float
    worst_return: float
    worst_x: np.ndarray
    worst_params: np.ndarray
    worst_distance: float
    worst_searcher: str
    cvar: float
    trace: Trace
    distances: np.ndarray
    searchers: tuple[str, ...]
    radius: float
    ball: str


def cvar(returns: Any, alpha: float) -> float:
    """Mean of the lowest ``ceil(alpha·n)`` returns (lower-tail CVaR_α)."""
    r = np.sort(np.asarray(returns, np.float64))
    if r.size == 0:
        return float("nan")
    k = max(1, int(math.ceil(alpha * r.size)))
    return float(r[:k].mean())


def _trace(return_fn, ball, key, aux, init_points, *, names, kwargs, episodes, eval_seed,
           mesh=None):  # fmt: skip
    """All candidates of all searchers: (x (T, D), returns (T,), searcher i32 (T,)); pure."""
    eval_keys = jax.random.split(jax.random.PRNGKey(eval_seed), episodes)
    fn = return_fn if aux is None else (lambda theta, keys: return_fn(theta, keys, aux))
    objective = make_objective(fn, ball, eval_keys, mesh)
    fixed = [jnp.zeros((1, ball.dim))]
    if init_points is not None:
        fixed.append(jax.vmap(ball.project)(jnp.asarray(init_points, jnp.float32)))
    fixed = jnp.concatenate(fixed, axis=0)
    xs, rs, ss = [fixed], [objective(fixed)], [jnp.full((fixed.shape[0],), -1, jnp.int32)]
    for i, (name, k) in enumerate(zip(names, jax.random.split(key, len(names)), strict=True)):
        x, r = SEARCHERS[name](objective, ball, k, **kwargs.get(name, {}))
        xs.append(x)
        rs.append(r)
        ss.append(jnp.full((x.shape[0],), i, jnp.int32))
    return tuple(jnp.concatenate(a, axis=0) for a in (xs, rs, ss))


def _result(ball: Ball, names, x, rets, labels, cvar_alpha) -> Result:
    x, rets, labels = np.asarray(x), np.asarray(rets, np.float64), np.asarray(labels)
    rets_safe = np.where(np.isfinite(rets), rets, np.inf)
    best = int(np.argmin(rets_safe))
    dist = np.asarray(jax.vmap(ball.distance)(jnp.asarray(x)), np.float64)
    s = int(labels[best])
    random_r = rets[labels == names.index("random")] if "random" in names else []
    return Result(
        nominal_return=float(rets[0]),
        worst_return=float(rets_safe[best]),
        worst_x=x[best],
        worst_params=np.asarray(ball.to_params(jnp.asarray(x[best]))),
        worst_distance=float(dist[best]),
        worst_searcher="centroid/init" if s < 0 else names[s],
        cvar=cvar(random_r, cvar_alpha) if len(random_r) else float("nan"),
        trace=Trace(x, rets, labels),
        distances=dist,
        searchers=names,
        radius=ball.radius,
        ball=ball.name,
    )


def search(
    return_fn: Callable[..., jax.Array],
    ball: Ball,
    key: jax.Array,
    *,
    aux: Any = None,
    searchers: Sequence[str] = ("random", "cmaes"),
    episodes: int = 4,
    eval_seed: int = 0,
    cvar_alpha: float = 0.1,
    init_points: jax.Array | None = None,
    searcher_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    mesh: Any = None,
) -> Result | list[Result]:
    """Runs the named searchers on ``ball`` (one jitted program) and collects the results.

    Args:
      return_fn: frozen policy's return, ``(theta (n, d), keys (n, 2)) -> (n,)``, or with
        ``aux``: ``(theta, keys, aux_s) -> (n,)``.
      ball: the uncertainty set (:func:`make_ball`).
      key: search key (candidate sampling); results are bit-identical under the same key.
      aux: optional pytree with a leading axis (S, ...), e.g. the policy parameters of S seeds;
        the search is vmapped over it (one compilation for all) and a list of S results is
        returned, each searched independently with the same key.
      searchers: names in :data:`SEARCHERS`.
      episodes: evaluation episodes per candidate; their keys come from ``eval_seed``.
      eval_seed: integer seed of the evaluation keys (reported with each failure case).
      cvar_alpha: tail fraction of CVaR over the random-search samples.
      init_points: optional f32 (k, D) extra candidates (e.g. the worst point of a smaller ball),
        projected and evaluated first; (S, k, D) with ``aux``.
      searcher_kwargs: per-searcher keyword arguments.
      mesh: optional :class:`jax.sharding.Mesh` (:func:`windtunnel_mesh`): candidate dynamics
        split over its ``"data"`` axis; ``episodes`` must divide over it.
    """
    names = check_searchers(searchers)
    kwargs = dict(searcher_kwargs or {})
    fn = _compiled(
        return_fn, ball, names, kwargs, episodes, eval_seed, aux is None, init_points is None,
        mesh,
    )  # fmt: skip
    if aux is None:
        x, r, s = fn(key, None, init_points)
        return _result(ball, names, x, r, s, cvar_alpha)
    xs, rs, ss = fn(key, aux, init_points)
    return [_result(ball, names, *a, cvar_alpha) for a in zip(xs, rs, ss, strict=True)]


# Jitted search programs, reused by repeated searches of the same objective and ball (e.g. the
# coevolution loop attacks a new checkpoint every round with the same compiled program). The
# values keep return_fn and ball alive so their ids stay unique.
_CACHE: dict[tuple, tuple[Any, Any, Callable]] = {}


def _compiled(return_fn, ball, names, kwargs, episodes, eval_seed, single, no_init, mesh=None):
    key = (id(return_fn), id(ball), names, repr(sorted(kwargs.items())), episodes, eval_seed,
           single, no_init, mesh)  # fmt: skip
    if key not in _CACHE:
        run = functools.partial(
            _trace, return_fn, ball, names=names, kwargs=kwargs, episodes=episodes,
            eval_seed=eval_seed, mesh=mesh,
        )  # fmt: skip
        if single:
            fn = jax.jit(run)
        else:
            fn = jax.jit(jax.vmap(run, in_axes=(None, 0, None if no_init else 0)))
        if len(_CACHE) > 32:
            _CACHE.clear()
        _CACHE[key] = (return_fn, ball, fn)
    return _CACHE[key][2]


def sweep(
    return_fn: Callable[..., jax.Array],
    make: Callable[[float], Ball],
    radii: Sequence[float],
    key: jax.Array,
    progress: Callable[[str], None] | None = None,
    **search_kwargs: Any,
) -> list[Any]:
    """Searches increasing radii; each search also evaluates the previous worst point, which is
    feasible in the larger (nested) ball, so the worst case is non-increasing in ε.

    ``progress`` (e.g. ``print``) receives one short line before and after each radius.
    Returns one entry per radius: a :class:`Result`, or a list of S results with ``aux``.
    """
    radii = list(radii)
    if radii != sorted(radii):
        raise ValueError(f"radii must be increasing, got {radii}")
    results, prev = [], None
    for i, (r, k) in enumerate(zip(radii, jax.random.split(key, len(radii)), strict=True)):
        start = time.perf_counter()
        if progress:
            progress(f"wind tunnel: searching radius {r:g} ({i + 1}/{len(radii)}) ...")
        res = search(return_fn, make(r), k, init_points=prev, **search_kwargs)
        if progress:
            worst = [x.worst_return for x in res] if isinstance(res, list) else res.worst_return
            progress(f"wind tunnel: radius {r:g} done in {time.perf_counter() - start:.0f} s, "
                     f"worst return {np.round(worst, 2).tolist()}")  # fmt: skip
        if isinstance(res, list):
            prev = np.stack([x.worst_x[None] for x in res])
        else:
            prev = res.worst_x[None]
        results.append(res)
    return results


def failure_cases(
    result: Result,
    ball: Ball,
    names: Sequence[str],
    *,
    threshold: float,
    eval_seed: int,
    max_cases: int = 32,
) -> list[dict[str, Any]]:
    """Candidates with return below ``threshold``, worst first: physical params per particle,
    distance, return, searcher and the evaluation seed that reproduces them."""
    rets = np.asarray(result.trace.returns, np.float64)
    order = np.argsort(np.where(np.isfinite(rets), rets, -np.inf))
    cases = []
    for i in order[:max_cases]:
        if not rets[i] < threshold:
            break
        theta = np.asarray(ball.to_params(result.trace.x[i]))
        s = int(result.trace.searcher[i])
        cases.append({
            "params": [dict(zip(names, map(float, row), strict=True)) for row in theta],
            "x": np.asarray(result.trace.x[i]).tolist(),
            "distance": float(result.distances[i]),
            "return": float(rets[i]),
            "searcher": "centroid/init" if s < 0 else result.searchers[s],
            "eval_seed": int(eval_seed),
        })  # fmt: skip
    return cases


def result_to_json(result: Result, names: Sequence[str]) -> dict[str, Any]:
    return {
        "ball": result.ball,
        "radius": result.radius,
        "searchers": list(result.searchers),
        "nominal_return": result.nominal_return,
        "worst_return": result.worst_return,
        "worst_distance": result.worst_distance,
        "worst_searcher": result.worst_searcher,
        "worst_params": [
            dict(zip(names, map(float, row), strict=True)) for row in result.worst_params
        ],
        "cvar": result.cvar,
        "num_evaluated": int(result.trace.returns.shape[0]),
    }


def plot(results: Sequence[Result], path: str, title: str = "") -> str:
    """Return vs distance from the centroid (every candidate, by searcher), and worst case vs ε."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, 2 if len(results) > 1 else 1, figsize=(11 if len(results) > 1 else 6, 4)
    )
    ax = np.atleast_1d(axes)[0]
    last = results[-1]
    rets = np.asarray(last.trace.returns)
    labels = np.asarray(last.trace.searcher)
    for i, name in enumerate(last.searchers):
        sel = labels == i
        ax.scatter(last.distances[sel], rets[sel], s=6, alpha=0.5, label=name)
    ax.axhline(last.nominal_return, color="k", ls="--", lw=1, label="nominal")
    ax.scatter([last.worst_distance], [last.worst_return], marker="*", s=150, c="r", label="worst")
    ax.set_xlabel(f"distance from centroid ({last.ball}, scaled units)")
    ax.set_ylabel("return")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title or f"wind tunnel, ε = {last.radius:g}")
    if len(results) > 1:
        ax2 = np.atleast_1d(axes)[1]
        ax2.plot(
            [r.radius for r in results], [r.worst_return for r in results], "o-", label="worst"
        )
        ax2.plot([r.radius for r in results], [r.cvar for r in results], "s--", label="CVaR")
        ax2.set_xlabel("radius ε")
        ax2.set_ylabel("return")
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# A finished run in the wind tunnel (python -m experiments.windtunnel)
# ---------------------------------------------------------------------------------------------

WINDTUNNEL_FILE = "windtunnel.json"


def validate_config(config: Any) -> None:
    """ValueError naming the field, before anything compiles."""
    harness.check_choice(config, "ball", sorted(BALLS))
    check_searchers(tuple(config.searchers))
    harness.check_range(config, "radius", lo=0.0)
    radii = list(config.radii)
    if radii != sorted(radii) or any(r < 0 for r in radii):
        raise harness.ConfigError(f"config.radii={radii} must be increasing and >= 0")
    harness.check_int(config, "episodes", lo=1)
    harness.check_range(config, "failure_fraction", lo=0.0, hi=1.0)
    harness.check_range(config, "cvar_alpha", lo=0.0, hi=1.0, lo_inclusive=False)
    windtunnel_mesh(config)


def windtunnel_mesh(config: Any):
    """The mesh of ``config.parallel`` (None without one) after its checks: every candidate's
    ``episodes`` evaluations split over ``"data"`` (so ``episodes`` must divide), no FSDP."""
    return sharding.trainer_mesh(config, {"episodes": config.episodes}, "the wind tunnel")


def evaluate_run(workdir: str, config: Any) -> dict[str, Any]:
    """Grid evaluation and wind-tunnel search of every seed of a finished run.

    Writes ``robust_eval.json`` + ``robust_eval.png`` (grid, mean over seeds) and
    ``windtunnel.json`` + ``windtunnel_seed<i>.png`` into ``workdir``; returns the wind-tunnel
    JSON.
    """
    validate_config(config)
    run = loaders.load_run(workdir)
    task = tasks.make_task(run.config, train_sampler=False)
    steps = robust_eval.num_steps(run.config)
    if config.grid:
        start = time.perf_counter()
        print(f"wind tunnel: robustness grid of {run.num_seeds} seeds ...", flush=True)
        grid_report(workdir, config, run, task.eval_env, task.spec, steps)
        print(f"wind tunnel: grid done in {time.perf_counter() - start:.0f} s", flush=True)
    full_return_fn = robust_eval.make_return_fn(task.eval_env, task.spec, run.apply, steps)
    out = search_report(workdir, config, run, task.spec, full_return_fn)
    with open(os.path.join(workdir, WINDTUNNEL_FILE), "w") as f:
        json.dump(out, f, indent=2, default=float)
    return out


def grid_report(workdir: str, config: Any, run: Any, eval_env: Any, spec: Any, steps: int):
    """The robustness grid of every seed of ``run`` (a :class:`adarl.robust_eval.RunPolicies`):
    ``robust_eval.json`` and the seed-mean heat map ``robust_eval.png``; returns the JSON dict."""
    rc = run.config
    rc_eval = rc.get("eval", {})
    grid_names = tuple(config.grid_params) or tuple(rc_eval.get("grid_params", ()) or ())
    grid_names = grid_names or spec.names[:2]
    rel = tuple(config.grid_scales) or tuple(rc_eval.get("grid_scales", (0.5, 1.0, 1.5)))
    episodes = config.grid_episodes or int(rc_eval.get("grid_episodes", 4))
    grids = robust_eval.evaluate_grid(
        eval_env, spec, run.apply, run.params, grid_names, rel,
        jax.random.PRNGKey(config.eval_seed), episodes, steps,
    )  # fmt: skip
    per_seed = [robust_eval.grid_to_json(g) for g in grids]
    grid_json = {
        "algo": rc.algo,
        "workdir": os.path.abspath(workdir),
        "nominal_return": [g["nominal_return"] for g in per_seed],
        "grid_mean": [g["grid_mean"] for g in per_seed],
        "per_seed": per_seed,
    }
    with open(os.path.join(workdir, robust_eval.ROBUST_FILE), "w") as f:
        json.dump(grid_json, f, indent=2)
    mean = robust_eval.GridResult(
        grids[0].names, grids[0].values,
        np.mean([g.returns for g in grids], 0), np.std([g.returns for g in grids], 0),
        float(np.mean([g.nominal for g in grids])),
    )  # fmt: skip
    robust_eval.plot_heatmap(
        mean, os.path.join(workdir, robust_eval.HEATMAP_FILE),
        f"{rc.algo}: mean return over {run.num_seeds} seeds",
    )  # fmt: skip
    return grid_json


def search_report(
    workdir: str, config: Any, run: Any, spec: Any, full_return_fn: Callable
) -> dict[str, Any]:
    """The radius sweep of every seed of ``run`` with failure cases and one plot per seed;
    returns the wind-tunnel JSON dict (written by :func:`evaluate_run`)."""
    space = space_from_spec(spec, tuple(config.params) or None)
    names = space.names
    return_fn = subspace_return_fn(full_return_fn, spec, names)
    radii = tuple(config.radii) or (config.radius,)
    sweeps = sweep(
        return_fn,
        lambda r: make_ball(config.ball, space, r),
        radii,
        jax.random.PRNGKey(config.seed),
        aux=run.params,
        searchers=tuple(config.searchers),
        episodes=config.episodes,
        eval_seed=config.eval_seed,
        cvar_alpha=config.cvar_alpha,
        searcher_kwargs={n: dict(config[n]) for n in config.searchers},
        progress=functools.partial(print, flush=True),
        mesh=windtunnel_mesh(config),
    )
    per_seed = []
    for s in range(run.num_seeds):
        results = [res[s] for res in sweeps]
        per_seed.append(_seed_entry(config, space, results))
        path = os.path.join(workdir, f"windtunnel_seed{s}.png")
        plot(results, path, f"{run.config.algo} seed {s}")
    return {
        "algo": run.config.algo,
        "workdir": os.path.abspath(workdir),
        "ball": config.ball,
        "radius": radii[-1],
        "params": list(names),
        "searchers": list(config.searchers),
        "nominal_return": [e["nominal_return"] for e in per_seed],
        "worst_return": [e["worst_return"] for e in per_seed],
        "cvar": [e["cvar"] for e in per_seed],
        "per_seed": per_seed,
        "config": config.to_dict() if hasattr(config, "to_dict") else dict(config),
    }


def failure_threshold(nominal: float, failure_fraction: float) -> float:
    """A return below ``nominal − (1 − failure_fraction)·|nominal|`` counts as a failure."""
    return nominal - (1.0 - failure_fraction) * abs(nominal)


def _seed_entry(config: Any, space: Space, results: Sequence[Result]) -> dict[str, Any]:
    last = results[-1]
    threshold = failure_threshold(last.nominal_return, config.failure_fraction)
    entry = result_to_json(last, space.names)
    entry["failure_threshold"] = threshold
    entry["failures"] = failure_cases(
        last, make_ball(config.ball, space, last.radius), space.names,
        threshold=threshold, eval_seed=config.eval_seed, max_cases=config.max_failures,
    )  # fmt: skip
    entry["sweep"] = [
        {"radius": r.radius, "worst_return": r.worst_return, "cvar": r.cvar} for r in results
    ]
    return entry
