"""Physical parameters of MJX tasks: a declarative description and a pure writer.

A parameter is a **named scalar** ``"<kind>"`` or ``"<kind>:<target>"`` where ``kind`` is a key of
:data:`KINDS` and ``target`` a MuJoCo element name (body, geom, joint or actuator, depending on the
kind). Names are resolved against the model's own name table (``mjx.Model.names``), so
:func:`apply_params` needs nothing but the model and the dict of values; it is pure and jit-able
(names and indices are static Python data, values are traced arrays).

Kinds (ADARL.md §3.2, §8; SAFETY_AND_ANALYSIS.md §1.4):

=================  ======================================================================
``mass:<body>``    body mass in kg; ``body_inertia`` is scaled by ``m / m_nominal`` (same
                   shape, uniform density) and ``body_subtreemass`` is recomputed.
``friction:<geom>`` sliding friction ``geom_friction[g, 0]`` of one geom. MuJoCo combines
                   the two geoms of a contact by ``max``, so lowering one geom below its
                   partner has no effect.
``friction_scale`` multiplier on every geom's sliding friction (nominal 1).
``damping:<joint>`` ``dof_damping`` of every dof of the joint (N·m·s/rad or N·s/m).
``gear:<actuator>`` ``actuator_gear[a, 0]`` (torque per unit control).
``gravity``        gravity magnitude g: ``opt.gravity = (0, 0, -g)``.
``wind``           head-wind speed W: ``opt.wind = (-W, 0, 0)`` as OMPO (`ant_random.py`).
``density``        ``opt.density`` (kg/m^3) of the medium.
``viscosity``      ``opt.viscosity`` of the medium.
``torso_length``   Hopper/Walker2d torso half-length L_t, OMPO's edit (ADARL.md §3.2).
``foot_length``    Hopper/Walker2d foot half-length L_f (both feet on Walker2d).
=================  ======================================================================

What is **recomputed** (as ``mj_setConst`` would): ``body_subtreemass`` after mass edits;
``geom_rbound`` and ``geom_aabb`` after capsule length edits (MJX uses them for broad-phase
culling). What is **not** recomputed, deliberately or for cost:

* ``body_invweight0``, ``dof_invweight0`` (``mj_setConst`` derives them from M(qpos0)); MJX uses
  them only in the constraint regulariser ``R ∝ invweight`` (soft-contact impedance), so a mass
  change leaves contact softness at its nominal calibration.
* ``actuator_acc0``/``actuator_length0`` after gear edits (not used by MJX dynamics).
* mass and inertia after the geometric edits: OMPO edits the compiled model and keeps them
  (ADARL.md §3.2), and so do we, so lengths are purely kinematic/geometric.
* ``density``/``viscosity``/``wind`` act only when the model was put with the fluid model on
  (``opt._impl.has_fluid_params`` is static, ADARL.md §8.3); :func:`apply_params` raises otherwise.
  Build such tasks with ``adarl.envs.make(name, fluid=True)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

Params = dict[str, jax.Array]

_OBJ = {
    "body": mujoco.mjtObj.mjOBJ_BODY,
    "geom": mujoco.mjtObj.mjOBJ_GEOM,
    "joint": mujoco.mjtObj.mjOBJ_JOINT,
    "actuator": mujoco.mjtObj.mjOBJ_ACTUATOR,
}
_NAME_ADR = {
    "body": ("name_bodyadr", "nbody"),
    "geom": ("name_geomadr", "ngeom"),
    "joint": ("name_jntadr", "njnt"),
    "actuator": ("name_actuatoradr", "nu"),
}


def _names(model: Any, obj: str) -> list[str]:
    """Element names of one object type, from a ``mujoco.MjModel`` or an ``mjx.Model``."""
    adr_field, n_field = _NAME_ADR[obj]
    n = int(getattr(model, n_field))
    if isinstance(model, mujoco.MjModel):
        return [mujoco.mj_id2name(model, _OBJ[obj], i) or "" for i in range(n)]
    blob = bytes(model.names)
    adr = np.asarray(getattr(model, adr_field))
    return [blob[a : blob.index(b"\0", a)].decode() for a in adr[:n]]


def _resolve(model: Any, obj: str, name: str) -> int:
    names = _names(model, obj)
    if name not in names:
        known = [n for n in names if n]
        raise ValueError(f"unknown {obj} {name!r}; the model's {obj} names are {known}")
    return names.index(name)


# --------------------------------------------------------------------------------------------
# Kinds: how one scalar is read from and written into an mjx.Model.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Kind:
    """One parameter kind.

    Attributes:
      target: object type the ``:<target>`` suffix names ("body", "geom", ...) or None (global).
      read: ``(model, target_id) -> float``, the nominal value in the model.
      write: ``(mjx_model, target_id, value f32[]) -> mjx_model`` (pure, traceable).
      lower: physical lower bound (plausibility clip), upper: physical upper bound.
      doc: unit and meaning.
    """

    target: str | None
    read: Callable[[Any, int], float]
    write: Callable[[mjx.Model, int, jax.Array], mjx.Model]
    lower: float = -np.inf
    upper: float = np.inf
    doc: str = ""


def _subtree_mass(model: mjx.Model, body_mass: jax.Array) -> jax.Array:
    """``body_subtreemass`` as ``mj_setConst`` computes it (children have larger ids)."""
    parent = np.asarray(model.body_parentid)
    sub = body_mass
    for b in range(int(model.nbody) - 1, 0, -1):
        sub = sub.at[parent[b]].add(sub[b])
    return sub


def _write_mass(m: mjx.Model, i: int, v: jax.Array) -> mjx.Model:
    ratio = v / m.body_mass[i]
    mass = m.body_mass.at[i].set(v)
    return m.replace(
        body_mass=mass,
        body_inertia=m.body_inertia.at[i].multiply(ratio),
        body_subtreemass=_subtree_mass(m, mass),
    )


def _joint_dofs(m: Any, j: int) -> np.ndarray:
    width = {0: 6, 1: 3, 2: 1, 3: 1}[int(np.asarray(m.jnt_type)[j])]
    start = int(np.asarray(m.jnt_dofadr)[j])
    return np.arange(start, start + width)


def _write_opt(m: mjx.Model, **fields: jax.Array) -> mjx.Model:
    return m.replace(opt=m.opt.replace(**fields))


def _require_fluid(m: mjx.Model, kind: str) -> None:
    impl = getattr(m.opt, "_impl", None)
    if impl is not None and not getattr(impl, "has_fluid_params", True):
        raise ValueError(
            f"parameter {kind!r} needs the fluid model, which MJX enables statically at put_model; "
            "build the task with adarl.envs.make(name, fluid=True)"
        )


def _write_fluid(field: str) -> Callable[[mjx.Model, int, jax.Array], mjx.Model]:
    def write(m: mjx.Model, _: int, v: jax.Array) -> mjx.Model:
        _require_fluid(m, field)
        if field == "wind":
            return _write_opt(m, wind=jnp.stack([-v, 0.0 * v, 0.0 * v]))
        return _write_opt(m, **{field: v})

    return write


# OMPO's Hopper/Walker2d geometry (ADARL.md §3.2), by element name so that the same code serves
# both models: torso body z = z_base + L_t, every thigh hangs at -L_t, capsule half-lengths = L.
_TORSO_BODY, _TORSO_GEOM = "torso", "torso_geom"
_THIGHS = ("thigh", "thigh_left")
_FEET = ("foot_geom", "foot_left_geom")


def _capsule_len(m: mjx.Model, g: int, L: jax.Array) -> mjx.Model:
    radius = m.geom_size[g, 0]
    out = m.replace(
        geom_size=m.geom_size.at[g, 1].set(L),
        geom_rbound=m.geom_rbound.at[g].set(radius + L),
    )
    if getattr(m, "geom_aabb", None) is not None and np.ndim(m.geom_aabb) == 2:
        # aabb = (center xyz, half-sizes xyz) in the geom frame; the capsule axis is local z.
        out = out.replace(geom_aabb=jnp.asarray(m.geom_aabb).at[g, 5].set(radius + L))
    return out


def _present(m: Any, obj: str, names: Sequence[str]) -> list[int]:
    all_names = _names(m, obj)
    return [all_names.index(n) for n in names if n in all_names]


def _read_torso(m: Any, _: int) -> float:
    return float(np.asarray(m.geom_size)[_resolve(m, "geom", _TORSO_GEOM), 1])


def _write_torso(m: mjx.Model, _: int, L: jax.Array) -> mjx.Model:
    torso = _resolve(m, "body", _TORSO_BODY)
    geom = _resolve(m, "geom", _TORSO_GEOM)
    # z_base = 1.05 in Gym/Brax XMLs: torso height minus torso half-length, invariant under
    # this edit (so applying it to an already edited model is consistent); traceable.
    z_base = m.body_pos[torso, 2] - m.geom_size[geom, 1]
    pos = m.body_pos.at[torso, 2].set(z_base + L)
    for b in _present(m, "body", _THIGHS):
        pos = pos.at[b, 2].set(-L)
    return _capsule_len(m.replace(body_pos=pos), geom, L)


def _read_foot(m: Any, _: int) -> float:
    return float(np.asarray(m.geom_size)[_resolve(m, "geom", _FEET[0]), 1])


def _write_foot(m: mjx.Model, _: int, L: jax.Array) -> mjx.Model:
    for g in _present(m, "geom", _FEET):
        m = _capsule_len(m, g, L)
    return m


def _read_gravity(m: Any, _: int) -> float:
    return float(-np.asarray(m.opt.gravity)[2])


def _read_wind(m: Any, _: int) -> float:
    return float(-np.asarray(m.opt.wind)[0])


KINDS: dict[str, Kind] = {
    "mass": Kind(
        "body",
        lambda m, i: float(np.asarray(m.body_mass)[i]),
        _write_mass,
        lower=1e-6,
        doc="body mass [kg]; inertia scaled along",
    ),
    "friction": Kind(
        "geom",
        lambda m, i: float(np.asarray(m.geom_friction)[i, 0]),
        lambda m, i, v: m.replace(geom_friction=m.geom_friction.at[i, 0].set(v)),
        lower=0.0,
        doc="sliding friction coefficient of one geom",
    ),
    "friction_scale": Kind(
        None,
        lambda m, i: 1.0,
        lambda m, i, v: m.replace(geom_friction=m.geom_friction.at[:, 0].multiply(v)),
        lower=0.0,
        doc="multiplier on every geom's sliding friction",
    ),
    "damping": Kind(
        "joint",
        lambda m, j: float(np.asarray(m.dof_damping)[_joint_dofs(m, j)[0]]),
        lambda m, j, v: m.replace(dof_damping=m.dof_damping.at[_joint_dofs(m, j)].set(v)),
        lower=0.0,
        doc="joint damping",
    ),
    "gear": Kind(
        "actuator",
        lambda m, a: float(np.asarray(m.actuator_gear)[a, 0]),
        lambda m, a, v: m.replace(actuator_gear=m.actuator_gear.at[a, 0].set(v)),
        doc="actuator gear (force per unit ctrl)",
    ),
    "gravity": Kind(
        None,
        _read_gravity,
        lambda m, _, v: _write_opt(m, gravity=jnp.stack([0.0 * v, 0.0 * v, -v])),
        doc="gravity magnitude [m/s^2] along -z",
    ),
    "wind": Kind(None, _read_wind, _write_fluid("wind"), doc="head-wind speed [m/s] along -x"),
    "density": Kind(
        None,
        lambda m, _: float(m.opt.density),
        _write_fluid("density"),
        lower=0.0,
        doc="medium density [kg/m^3]",
    ),
    "viscosity": Kind(
        None,
        lambda m, _: float(m.opt.viscosity),
        _write_fluid("viscosity"),
        lower=0.0,
        doc="medium viscosity [Pa s]",
    ),
    "torso_length": Kind(
        None, _read_torso, _write_torso, lower=1e-3, doc="Hopper/Walker2d torso half-length [m]"
    ),
    "foot_length": Kind(
        None, _read_foot, _write_foot, lower=1e-3, doc="Hopper/Walker2d foot half-length [m]"
    ),
}


def _parse(model: Any, name: str) -> tuple[Kind, int]:
    """``"<kind>[:<target>]"`` -> (kind, target id or -1); ValueError on bad names."""
    if not isinstance(name, str):
        raise ValueError(f"parameter names must be strings, got {name!r}")
    kind_name, _, target = name.partition(":")
    if kind_name not in KINDS:
        raise ValueError(
            f"unknown parameter {name!r}: kind {kind_name!r} is not one of {sorted(KINDS)}"
        )
    kind = KINDS[kind_name]
    if kind.target is None:
        if target:
            raise ValueError(f"parameter kind {kind_name!r} takes no ':<target>', got {name!r}")
        if kind_name in ("torso_length", "foot_length"):
            _resolve(model, "geom", _TORSO_GEOM if kind_name == "torso_length" else _FEET[0])
        return kind, -1
    if not target:
        raise ValueError(
            f"parameter kind {kind_name!r} needs a {kind.target} name: '{kind_name}:<name>'"
        )
    return kind, _resolve(model, kind.target, target)


# --------------------------------------------------------------------------------------------
# ParamSpec
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ParamSpec:
    """Declarative description of the physical parameters a task exposes.

    All parameters are scalars. Arrays below are float64 numpy of shape (d,), d = len(names).

    Attributes:
      names: parameter names, ``"<kind>[:<target>]"`` (see module docstring).
      nominal: values in the unmodified model (the centroid P° of ADARL.md §2.1).
      scale: per-parameter unit of the metric used by the samplers and
        :func:`adarl.dynamics.wasserstein_distance`: distance = ||(x - y) / scale||_2.
        Default |nominal| (relative units), 1 where the nominal is 0.
      lower, upper: plausibility bounds; samplers clip into them (clipping towards a centroid
        inside the box never increases a transport cost, so W-ball guarantees survive).
    """

    names: tuple[str, ...]
    nominal: np.ndarray
    scale: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_vector(self, params: Mapping[str, jax.Array]) -> jax.Array:
        """dict name -> (..., ) arrays  ->  f32 (..., d), ordered as ``names``."""
        self.check(params)
        return jnp.stack([jnp.asarray(params[n], jnp.float32) for n in self.names], axis=-1)

    def from_vector(self, x: jax.Array) -> Params:
        """f32 (..., d) -> dict name -> f32 (...)."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"vector has last dimension {x.shape[-1]}, spec has {self.dim}")
        return {n: x[..., i] for i, n in enumerate(self.names)}

    def clip(self, params: Mapping[str, jax.Array]) -> Params:
        """Each value clipped into its physical range ``[lower, upper]`` (f32, same shapes)."""
        return {
            n: jnp.clip(jnp.asarray(params[n], jnp.float32), lo, hi)
            for n, lo, hi in zip(self.names, self.lower, self.upper, strict=True)
        }

    def nominal_params(self, n: int | None = None) -> Params:
        """The nominal values, as f32 scalars or broadcast to (n,)."""
        shape = () if n is None else (n,)
        return {
            k: jnp.full(shape, v, jnp.float32)
            for k, v in zip(self.names, self.nominal, strict=True)
        }

    def check(self, params: Mapping[str, Any], batch: int | None = None) -> None:
        """ValueError unless ``params`` has exactly these names and equal leading shapes."""
        if not isinstance(params, Mapping):
            raise ValueError(f"params must be a dict name -> array, got {type(params).__name__}")
        missing = [n for n in self.names if n not in params]
        extra = [n for n in params if n not in self.names]
        if missing or extra:
            raise ValueError(
                f"params do not match the spec: missing {missing}, unknown {extra}; "
                f"expected names {list(self.names)}"
            )
        shapes = {n: tuple(np.shape(params[n])) for n in self.names}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"params have mismatched shapes {shapes}")
        if batch is not None and shapes and next(iter(shapes.values())) != (batch,):
            raise ValueError(f"params must have shape ({batch},), got {shapes}")


def default_scale(nominal: np.ndarray) -> np.ndarray:
    return np.where(np.abs(nominal) > 0, np.abs(nominal), 1.0)


def param_spec(
    env_or_model: Any,
    names: Sequence[str] | None = None,
    *,
    scale: Mapping[str, float] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> ParamSpec:
    """Builds the :class:`ParamSpec` of a task.

    Args:
      env_or_model: an env from :func:`adarl.envs.make` (its ``default_params`` name the default
        parameter set), an ``mjx.Model`` or a ``mujoco.MjModel``.
      names: parameter names; default the env's ``default_params``.
      scale: per-name metric unit overrides (default |nominal|, or 1 at a zero nominal).
      bounds: per-name (lower, upper) overrides (default the kind's physical bounds).

    Returns:
      ParamSpec with nominal values read from the model.
    """
    model = getattr(env_or_model, "mjx_model", env_or_model)
    if names is None:
        names = getattr(env_or_model, "default_params", None)
        if names is None:
            raise ValueError("names is required when env_or_model has no default_params")
    names = tuple(names)
    if not names:
        raise ValueError("a ParamSpec needs at least one parameter name")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate parameter names in {names}")
    kinds = [_parse(model, n) for n in names]
    nominal = np.array([k.read(model, i) for k, i in kinds], np.float64)
    sc = default_scale(nominal)
    lo = np.array([k.lower for k, _ in kinds], np.float64)
    hi = np.array([k.upper for k, _ in kinds], np.float64)
    for label, table in (("scale", scale), ("bounds", bounds)):
        unknown = sorted(set(table or {}) - set(names))
        if unknown:
            raise ValueError(f"{label} names {unknown} are not parameters; parameters: {names}")
    for n, s in (scale or {}).items():
        if not s > 0:
            raise ValueError(f"scale[{n!r}] must be > 0, got {s}")
        sc[names.index(n)] = s
    for n, (a, b) in (bounds or {}).items():
        if not a < b:
            raise ValueError(f"bounds[{n!r}] must have lower < upper, got ({a}, {b})")
        lo[names.index(n)], hi[names.index(n)] = a, b
    bad = [n for n, v, a, b in zip(names, nominal, lo, hi, strict=True) if not a <= v <= b]
    if bad:
        raise ValueError(f"nominal values of {bad} lie outside their bounds")
    return ParamSpec(names, nominal, sc, lo, hi)


def apply_params(mjx_model: mjx.Model, params: Mapping[str, jax.Array]) -> mjx.Model:
    """Writes scalar physical parameters into an ``mjx.Model`` (pure, jit- and vmap-able).

    Args:
      mjx_model: the nominal model (``env.mjx_model``); geometric kinds read their base
        geometry from it, so pass the unmodified model.
      params: dict name -> f32 scalar (vmap over a batch for per-env models).

    Returns:
      the edited model; fields not named by a parameter are the input's (shared, unbatched).
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a dict name -> array, got {type(params).__name__}")
    m = mjx_model
    for name in sorted(params):
        value = jnp.asarray(params[name], jnp.float32)
        if value.shape != ():
            raise ValueError(
                f"apply_params takes scalars; params[{name!r}] has shape {value.shape} "
                "(vmap apply_params over the batch)"
            )
        kind, target = _parse(mjx_model, name)
        m = kind.write(m, target, value)
    return m
