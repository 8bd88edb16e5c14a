"""Dynamics samplers: draw batches of physical parameters, one interface for all.

Every sampler is a :class:`Sampler`: ``sampler(key, n, episode=None) -> params`` with
``params`` a dict name -> f32 (n,) (names of the :class:`adarl.params.ParamSpec`). ``episode``
(int (n,), the per-env episode index) is used by the deterministic OMPO schedule and ignored by
the others, so the per-episode wrapper calls every sampler the same way. Samplers are pure and
jit-able; the registry :func:`make_sampler` builds them by name.

Metric. Parameters are compared in scaled units, ``d(x, y) = ||(x - y) / spec.scale||_2``, and
distributions by the order-p Wasserstein distance with that ground metric (ADARL.md §2.1 ball
``W(P̂°, P) ≤ ε``; SAFETY_AND_ANALYSIS.md §1.4 uncertainty sets).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

import harness
from adarl.params import Params, ParamSpec

SampleFn = Callable[[jax.Array, int, Any], Params]


@dataclasses.dataclass(frozen=True, eq=False)
class Sampler:
    """A named parameter sampler.

    Attributes:
      name: registry name.
      spec: the ParamSpec its output follows.
      fn: ``(key, n, episode) -> params``; ``episode`` is None or int (n,).
      uses_episode: True when the output depends on ``episode`` (OMPO schedule).
    """

    name: str
    spec: ParamSpec
    fn: SampleFn
    uses_episode: bool = False

    def __post_init__(self):
        # One compiled program per batch size n, also for eager callers (tests, reports).
        object.__setattr__(self, "_jitted", jax.jit(self.fn, static_argnums=1))

    def __call__(self, key: jax.Array, n: int, episode: jax.Array | None = None) -> Params:
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        if self.uses_episode:
            if episode is None:
                raise ValueError(f"sampler {self.name!r} needs episode=<int array (n,)>")
            episode = jnp.broadcast_to(jnp.asarray(episode), (n,))
        return self._jitted(key, int(n), episode)


def _clip(spec: ParamSpec, x: jax.Array) -> jax.Array:
    return jnp.clip(x, jnp.asarray(spec.lower, jnp.float32), jnp.asarray(spec.upper, jnp.float32))


# --------------------------------------------------------------------------------------------
# Nominal and box
# --------------------------------------------------------------------------------------------


def nominal_sampler(spec: ParamSpec) -> Sampler:
    """Always the nominal parameters (no randomisation)."""
    return Sampler("nominal", spec, lambda key, n, episode: spec.nominal_params(n))


def box_sampler(
    spec: ParamSpec,
    *,
    width: float | Mapping[str, float] = 0.1,
    low: Mapping[str, float] | None = None,
    high: Mapping[str, float] | None = None,
) -> Sampler:
    """Uniform box (classic domain randomisation), independent per parameter.

    Default box: ``nominal ± width · scale`` (width relative to the metric unit), or explicit
    ``low``/``high`` per name; then clipped to the spec's bounds.
    """
    w = _per_param(spec, width, "width")
    if np.any(w < 0):
        raise ValueError(f"width must be >= 0, got {width}")
    lo = spec.nominal - w * spec.scale
    hi = spec.nominal + w * spec.scale
    for label, table, arr in (("low", low, lo), ("high", high, hi)):
        for n, v in (table or {}).items():
            if n not in spec.names:
                raise ValueError(f"{label} names {n!r}, not a parameter of {spec.names}")
            arr[spec.names.index(n)] = v
    if np.any(lo > hi):
        raise ValueError(f"box has low > high: low={lo}, high={hi}")
    lo = np.maximum(lo, spec.lower)
    hi = np.minimum(hi, spec.upper)
    lo_j, hi_j = jnp.asarray(lo, jnp.float32), jnp.asarray(hi, jnp.float32)

    def fn(key, n, episode):
        u = jax.random.uniform(key, (n, spec.dim))
        return spec.from_vector(lo_j + u * (hi_j - lo_j))

    return Sampler("box", spec, fn)


def _per_param(spec: ParamSpec, value: float | Mapping[str, float], label: str) -> np.ndarray:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(spec.names))
        if unknown:
            raise ValueError(f"{label} names {unknown}, not parameters of {spec.names}")
        return np.array([float(value.get(n, 0.0)) for n in spec.names])
    return np.full(spec.dim, float(value))


# --------------------------------------------------------------------------------------------
# Wasserstein ball
# --------------------------------------------------------------------------------------------


def wasserstein_sampler(
    spec: ParamSpec,
    *,
    eps: float,
    p: int = 2,
    atoms: jax.Array | np.ndarray | Mapping[str, Any] | None = None,
    budget: str = "uniform",
    allocation: str = "dirichlet",
) -> Sampler:
    r"""Empirical distributions inside a Wasserstein ball ``W_p(Q_n, P̂) ≤ ε`` (ADARL.md §2.1).

    Centroid P̂: the nominal parameters (a point mass) or m equal-weight ``atoms`` (m, d), e.g.
    the training domain-randomisation samples. Output Q_n: n equal-weight particles
    ``θ_i = clip(c_{a(i)} + scale ⊙ Δ_i)`` where ``a`` assigns every atom to n/m particles (so
    ``n % m == 0`` is required) in a random order. The particle coupling gives

    .. math:: W_p(Q_n, \hat P)^p \le \frac1n \sum_i \|Δ_i\|_2^p = t\,ε^p \le ε^p,

    and clipping into the spec's box (which holds every atom) only shortens each |Δ_i|, so the
    guarantee holds exactly (SAFETY_AND_ANALYSIS.md §1.4: a particle/Monge construction).

    Covering the ball: the budget fraction ``t`` is ``U(0, 1)`` ("uniform") or 1 ("boundary"),
    and it is split over particles as ``n t ε^p w_i`` with ``w ~ Dirichlet(1)`` ("dirichlet":
    single particles reach up to ``n^{1/p} ε``, i.e. far outliers at small mass) or ``w_i = 1/n``
    ("equal": every particle at distance ``t^{1/p} ε``); directions are uniform on the sphere.

    The guarantee is per joint draw. Under per-episode resampling (:mod:`adarl.wrappers`) it
    holds for each episode's marginal law, not for the parameters in use at one instant (see
    that module's docstring).

    Args:
      spec: parameter spec; the metric unit is ``spec.scale``.
      eps: radius ε ≥ 0 in scaled units.
      p: Wasserstein order, 1 or 2.
      atoms: centroid atoms, f32 (m, d) in spec order or a dict name -> (m,); default nominal.
      budget: "uniform" or "boundary".
      allocation: "dirichlet" or "equal".
    """
    if not (isinstance(eps, (int, float)) and np.isfinite(eps)) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    if budget not in ("uniform", "boundary"):
        raise ValueError(f"budget must be 'uniform' or 'boundary', got {budget!r}")
    if allocation not in ("dirichlet", "equal"):
        raise ValueError(f"allocation must be 'dirichlet' or 'equal', got {allocation!r}")
    centroid = _atoms(spec, atoms)
    m = centroid.shape[0]
    scale = jnp.asarray(spec.scale, jnp.float32)
    c = jnp.asarray(centroid, jnp.float32)

    def fn(key, n, episode):
        if n % m:
            raise ValueError(f"n={n} must be a multiple of the number of centroid atoms m={m}")
        k_perm, k_dir, k_w, k_t = jax.random.split(key, 4)
        owner = jax.random.permutation(k_perm, jnp.arange(n) % m)
        direction = jax.random.normal(k_dir, (n, spec.dim))
        direction = direction / jnp.maximum(
            jnp.linalg.norm(direction, axis=-1, keepdims=True), 1e-12
        )
        if allocation == "dirichlet":
            e = -jnp.log(jax.random.uniform(k_w, (n,), minval=1e-12, maxval=1.0))
            w = e / jnp.sum(e)
        else:
            w = jnp.full((n,), 1.0 / n)
        t = jax.random.uniform(k_t, ()) if budget == "uniform" else jnp.float32(1.0)
        # Slight shrink (1 - 1e-6) absorbs f32 rounding so the guarantee holds in floating point.
        radius = (n * t * w) ** (1.0 / p) * (eps * (1.0 - 1e-6))
        x = c[owner] + scale * direction * radius[:, None]
        return spec.from_vector(_clip(spec, x))

    return Sampler("wasserstein", spec, fn)


def _atoms(spec: ParamSpec, atoms: Any) -> np.ndarray:
    if atoms is None:
        return spec.nominal[None, :].astype(np.float32)
    if isinstance(atoms, Mapping):
        spec.check(atoms)
        atoms = np.stack([np.asarray(atoms[n]) for n in spec.names], axis=-1)
    atoms = np.asarray(atoms, np.float32)
    if atoms.ndim != 2 or atoms.shape[1] != spec.dim or atoms.shape[0] < 1:
        raise ValueError(f"atoms must have shape (m, {spec.dim}), got {atoms.shape}")
    if np.any(atoms < spec.lower) or np.any(atoms > spec.upper):
        raise ValueError("atoms must lie inside the spec's bounds")
    return atoms


def wasserstein_distance(x_atoms: Any, y_atoms: Any, p: int = 2, scale: Any = None) -> float:
    r"""Exact W_p between two equal-weight empirical sets, ground metric ``||(x-y)/scale||_2``.

    Sizes n and m may differ: each set is replicated to lcm(n, m) atoms, where the optimal plan
    between uniform measures is a permutation (Birkhoff), solved by
    ``scipy.optimize.linear_sum_assignment``. Host-side (numpy), for tests and reports.

    Args:
      x_atoms: (n, d) array or dict name -> (n,) (then ``scale`` may be a ParamSpec).
      y_atoms: (m, d) array or dict name -> (m,).
      p: order >= 1.
      scale: (d,) per-coordinate unit, a ParamSpec (uses ``.scale``), or None (1).

    Returns:
      W_p as a Python float.
    """
    if not (isinstance(p, (int, float)) and p >= 1):
        raise ValueError(f"p must be >= 1, got {p!r}")
    names = scale.names if isinstance(scale, ParamSpec) else None
    x = _as_matrix(x_atoms, names, "x_atoms")
    y = _as_matrix(y_atoms, names, "y_atoms")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x_atoms and y_atoms have dimensions {x.shape[1]} != {y.shape[1]}")
    s = scale.scale if isinstance(scale, ParamSpec) else (1.0 if scale is None else scale)
    s = np.broadcast_to(np.asarray(s, np.float64), (x.shape[1],))
    if np.any(s <= 0):
        raise ValueError("scale must be > 0")
    n, m = x.shape[0], y.shape[0]
    k = int(np.lcm(n, m))
    if k > 4096:
        raise ValueError(f"lcm of set sizes {n}, {m} is {k} > 4096; use equal or divisible sizes")
    xr, yr = np.repeat(x, k // n, axis=0) / s, np.repeat(y, k // m, axis=0) / s
    cost = np.linalg.norm(xr[:, None, :] - yr[None, :, :], axis=-1) ** p
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return float(np.mean(cost[rows, cols]) ** (1.0 / p))


def _as_matrix(a: Any, names: tuple[str, ...] | None, label: str) -> np.ndarray:
    if isinstance(a, Mapping):
        keys = names or tuple(sorted(a))
        missing = [k for k in keys if k not in a]
        if missing:
            raise ValueError(f"{label} misses parameters {missing}")
        a = np.stack([np.asarray(a[k], np.float64) for k in keys], axis=-1)
    a = np.asarray(a, np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] < 1:
        raise ValueError(f"{label} must be (n, d), got shape {a.shape}")
    return a


# --------------------------------------------------------------------------------------------
# OMPO / AdaRL sinusoidal schedules (ADARL.md §3.1)
# --------------------------------------------------------------------------------------------

# task family -> parameter -> (a, b, c): value_i = a + b sin(c i), i = episode index.
# Printed in AdaRL (arXiv 2510.11899, App. A.2.2); OMPO's code uses b = 0.1 for Hopper.
OMPO_SCHEDULES: dict[str, dict[str, tuple[float, float, float]]] = {
    "hopper": {"torso_length": (0.4, 0.2, 0.2), "foot_length": (0.39, 0.2, 0.2)},
    "walker2d": {"torso_length": (0.2, 0.1, 0.3), "foot_length": (0.1, 0.05, 0.3)},
    "ant": {"gravity": (14.715, 4.905, 0.5), "wind": (1.0, 0.2, 0.5)},
    "humanoid": {"gravity": (14.715, 4.905, 0.5), "wind": (1.0, 0.5, 0.5)},
}
OMPO_CODE_HOPPER_AMPLITUDE = 0.1


def ompo_sampler(
    spec: ParamSpec,
    *,
    task: str | None = None,
    schedule: Mapping[str, tuple[float, float, float]] | None = None,
    hopper_amplitude: str | float = "paper",
) -> Sampler:
    """Deterministic per-episode schedule ``a + b sin(c · episode)`` (ADARL.md §3.1).

    Args:
      spec: its names must cover the schedule's parameters; others stay nominal.
      task: "hopper", "walker2d", "ant" or "humanoid" (keys of OMPO_SCHEDULES), or None with an
        explicit ``schedule``.
      schedule: dict name -> (a, b, c), overriding/adding entries.
      hopper_amplitude: "paper" (0.2, as printed), "code" (0.1, OMPO's code) or a number; only
        for task="hopper". Record which one a run used.
    """
    if task is None and schedule is None:
        raise ValueError(f"ompo needs task (one of {sorted(OMPO_SCHEDULES)}) or schedule")
    table: dict[str, tuple[float, float, float]] = {}
    if task is not None:
        if task not in OMPO_SCHEDULES:
            raise ValueError(f"unknown OMPO task {task!r}; known: {sorted(OMPO_SCHEDULES)}")
        table.update(OMPO_SCHEDULES[task])
        if task == "hopper":
            amp = {"paper": 0.2, "code": OMPO_CODE_HOPPER_AMPLITUDE}.get(hopper_amplitude)
            if amp is None and isinstance(hopper_amplitude, (int, float)):
                amp = float(hopper_amplitude)
            if amp is None:
                raise ValueError(
                    f"hopper_amplitude must be 'paper', 'code' or a number, got {hopper_amplitude!r}"
                )
            table = {k: (a, amp, c) for k, (a, _, c) in table.items()}
    table.update(schedule or {})
    unknown = sorted(set(table) - set(spec.names))
    if unknown:
        raise ValueError(f"schedule parameters {unknown} are not in the spec {spec.names}")
    a = np.array(
        [table.get(n, (v, 0.0, 0.0))[0] for n, v in zip(spec.names, spec.nominal, strict=True)]
    )
    b = np.array([table.get(n, (0.0, 0.0, 0.0))[1] for n in spec.names])
    c = np.array([table.get(n, (0.0, 0.0, 0.0))[2] for n in spec.names])
    a_j, b_j, c_j = (jnp.asarray(v, jnp.float32) for v in (a, b, c))

    def fn(key, n, episode):
        i = jnp.asarray(episode, jnp.float32)[:, None]
        return spec.from_vector(_clip(spec, a_j + b_j * jnp.sin(c_j * i)))

    return Sampler("ompo", spec, fn, uses_episode=True)


# --------------------------------------------------------------------------------------------
# Failure points found by the wind tunnel
# --------------------------------------------------------------------------------------------


def failure_sampler(
    spec: Any,
    *,
    points: Any,
    weights: Any = None,
    p_adv: float = 0.5,
    jitter: float = 0.0,
    base: Any = None,
):
    """A :class:`Sampler` drawing failure parameters found by the wind tunnel (:mod:`adarl.windtunnel`).

    With probability ``p_adv`` a sample is one of ``points`` (k, d) physical (chosen ∝
    ``weights``, uniform by default) plus ``jitter · scale`` Gaussian noise, otherwise a draw of
    ``base`` (another Sampler; default the nominal parameters). Pure and jit-able.
    """
    pts = jnp.asarray(np.asarray(points, np.float32).reshape(-1, spec.dim))
    if pts.shape[0] < 1:
        raise ValueError("points must hold at least one parameter vector")
    if not 0.0 <= p_adv <= 1.0:
        raise ValueError(f"p_adv must be in [0, 1], got {p_adv!r}")
    w = jnp.ones((pts.shape[0],)) if weights is None else jnp.asarray(weights, jnp.float32)
    logits = jnp.log(jnp.maximum(w, 1e-12))
    base = base or nominal_sampler(spec)
    scale = jnp.asarray(spec.scale, jnp.float32)
    lo, hi = jnp.asarray(spec.lower, jnp.float32), jnp.asarray(spec.upper, jnp.float32)

    def fn(key, n, episode):
        k_base, k_mix, k_pick, k_jit = jax.random.split(key, 4)
        base_x = spec.to_vector(base(k_base, n, episode) if base.uses_episode else base(k_base, n))
        pick = jax.random.categorical(k_pick, logits, shape=(n,))
        adv = pts[pick] + jitter * scale * jax.random.normal(k_jit, (n, spec.dim))
        use = jax.random.uniform(k_mix, (n, 1)) < p_adv
        return spec.from_vector(jnp.clip(jnp.where(use, adv, base_x), lo, hi))

    return Sampler("windtunnel", spec, fn, uses_episode=base.uses_episode)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

# Every sampler registers here, where the table is defined, so a config naming any of them
# validates whichever adarl modules happen to be imported.
SAMPLERS: harness.Registry[Callable[..., Sampler]] = harness.Registry("sampler")
SAMPLERS.add("nominal", nominal_sampler)
SAMPLERS.add("box", box_sampler)
SAMPLERS.add("wasserstein", wasserstein_sampler)
SAMPLERS.add("ompo", ompo_sampler)
SAMPLERS.add("windtunnel", failure_sampler)


def register_sampler(name: str, factory: Callable[..., Sampler]) -> None:
    """Adds a sampler factory ``(spec, **kwargs) -> Sampler``; duplicate names raise ValueError."""
    SAMPLERS.add(name, factory)


def make_sampler(name: str, spec: ParamSpec, **kwargs: Any) -> Sampler:
    """Builds a registered sampler; unknown names raise a ValueError listing the known ones."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; registered: {sorted(SAMPLERS)}")
    if not isinstance(spec, ParamSpec):
        raise ValueError(f"spec must be an adarl.params.ParamSpec, got {type(spec).__name__}")
    return SAMPLERS.get(name)(spec, **kwargs)
