"""Shielded vs unshielded: every seed of a finished run across the wind tunnel's worst cases and
the robustness grid (python -m experiments.shield; SAFETY_AND_ANALYSIS.md §1.5 metrics).

Per seed: (1) collect unshielded rollouts under the nominal model, the seed's ``num_worst``
wind-tunnel worst cases (``windtunnel.json`` of the run directory, written by
``python -m experiments.windtunnel``: the worst point, then the failure cases worst first;
nominal only if absent) and uniform samples of the configured ball, and fit the safety critic on
them (:func:`adarl.safety.fit_critic`, labels :func:`adarl.safety.violation_labels`); (2) run the
same episodes shielded (the verifier's M = 1 + ``num_worst`` models: nominal + those worst cases)
and unshielded on every condition (nominal, each worst case, grid points); (3) report violation,
intervention and call rates, the return cost of shielding and the wall time per env step.
:func:`windtunnel_report` does the same on the nominal model and the worst cases only and adds
the table to ``windtunnel.json`` (the wind tunnel's violation rates with and without the shield).
Top of the adarl stack (reads any run through :mod:`adarl.loaders`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import harness
from adarl import loaders, robust_eval, safety, sharding, shield, tasks
from adarl import windtunnel as wt
from harness import stats

SHIELD_FILE = "shield.json"
METRICS = ("violation_rate", "intervention_rate", "call_rate", "return", "us_per_step")


def validate_config(config: Any) -> None:
    """ConfigError naming the field, before anything compiles."""
    harness.check_choice(config, "constraint", safety.CONSTRAINTS.names())
    for field in ("horizon", "num_candidates", "episodes", "label_horizon", "critic_steps"):
        harness.check_int(config, field, lo=1)
    harness.check_int(config, "num_candidates", lo=2)
    harness.check_int(config, "num_worst", lo=1)
    harness.check_int(config, "every", lo=0)
    harness.check_range(config, "tau", lo=0.0, hi=1.0)
    harness.check_range(config, "ball_radius", lo=0.0)
    # The shielded rollouts are not sharded yet: only the section and the mesh are checked.
    sharding.trainer_mesh(config, {}, "the shield evaluation (adarl.shield_eval)")


def _full(spec: Any, named: dict[str, float]) -> np.ndarray:
    theta = np.asarray(spec.nominal, np.float32).copy()
    for name, value in named.items():
        theta[spec.names.index(name)] = value
    return theta


def worst_cases(workdir: str, spec: Any, num_seeds: int, num_worst: int) -> np.ndarray | None:
    """f32 (S, num_worst, d) the wind tunnel's current worst cases per seed (``windtunnel.json``):
    the worst point found, then distinct failure cases worst first; a seed with fewer repeats
    its worst point. None when the run has no ``windtunnel.json``."""
    path = os.path.join(workdir, wt.WINDTUNNEL_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        per_seed = json.load(f)["per_seed"]
    out = np.tile(np.asarray(spec.nominal, np.float32), (num_seeds, num_worst, 1))
    for s, entry in enumerate(per_seed[:num_seeds]):
        cases = [_full(spec, entry["worst_params"][0])]
        for case in entry.get("failures", []):
            theta = _full(spec, case["params"][0])
            if len(cases) < num_worst and not any(np.allclose(theta, c) for c in cases):
                cases.append(theta)
        out[s] = np.stack(cases + cases[:1] * (num_worst - len(cases)))
    return out


def conditions(workdir: str, spec: Any, config: Any, run_config: Any, num_seeds: int):
    """name -> f32 (S, d) true parameters per seed: nominal, the wind tunnel's worst cases per
    seed (``worst #i``, if ``windtunnel.json`` exists) and, with ``config.grid``, the robustness
    grid points."""
    nominal = np.asarray(spec.nominal, np.float32)
    out = {"nominal": np.tile(nominal, (num_seeds, 1))}
    worst = worst_cases(workdir, spec, num_seeds, config.num_worst)
    for i in range(0 if worst is None else worst.shape[1]):
        out[f"worst #{i + 1}"] = worst[:, i]
    if not config.get("grid", True):
        return out
    names = tuple(config.grid_params) or tuple(run_config.eval.get("grid_params", ()) or ())
    names = names or spec.names[:2]
    v1, v2 = robust_eval.grid_points(spec, names, tuple(config.grid_scales))
    i1, i2 = spec.names.index(names[0]), spec.names.index(names[1])
    for a in v1:
        for b in v2:
            theta = nominal.copy()
            theta[i1], theta[i2] = a, b
            out[f"grid {names[0]}={a:.3g} {names[1]}={b:.3g}"] = np.tile(theta, (num_seeds, 1))
    return out


def _episodes(theta: np.ndarray, n: int) -> jax.Array:
    return jnp.asarray(np.tile(theta, (n, 1)), jnp.float32)


def fit_seed_critic(built, policy_params, spec, config, worst, models, key):
    """The safety critic of one seed, fitted on unshielded rollouts under nominal, worst-case
    (``worst`` f32 (W, d)) and ball-sampled dynamics (the wind-tunnel and training
    distributions)."""
    n = config.episodes
    space = wt.space_from_spec(spec)
    ball = wt.make_ball("box", space, config.ball_radius)
    k_ball, k_run, k_fit = jax.random.split(key, 3)
    sampled = jax.vmap(ball.to_params)(ball.sample(k_ball, n))[:, 0]
    thetas = [_episodes(spec.nominal, n), *(_episodes(w, n) for w in worst), sampled]
    off = shield.Knobs(jnp.float32(1.0), jnp.int32(0))
    obs, act, labels = [], [], []
    # the unshielded runs never call the verifier, so any critic parameters do
    dummy = built.critic.init(
        key, jnp.zeros((1, built.observation_size)), jnp.zeros((1, built.action_size))
    )
    for i, th in enumerate(thetas):
        keys = jax.random.split(jax.random.fold_in(k_run, i), n)
        # same argument shapes as the evaluation runs: one compile serves both
        tr = built.runner.run(policy_params, dummy, th, models, keys, off)
        y = safety.violation_labels(
            jnp.swapaxes(tr.violated, 0, 1), ~jnp.swapaxes(tr.alive, 0, 1), config.label_horizon
        )
        mask = np.asarray(tr.alive).ravel()
        obs.append(np.asarray(tr.obs).reshape(mask.size, -1)[mask])
        act.append(np.asarray(tr.action).reshape(mask.size, -1)[mask])
        labels.append(np.asarray(jnp.swapaxes(y, 0, 1)).ravel()[mask])
    obs, act, labels = (jnp.asarray(np.concatenate(a)) for a in (obs, act, labels))
    params, _ = safety.fit_critic(
        k_fit, obs, act, labels, hidden=tuple(config.critic_hidden), steps=config.critic_steps
    )
    return params, float(labels.mean())


class _Built:
    """The compiled runner and sizes of a run (one compile for all seeds and conditions)."""

    def __init__(self, run, task, config):
        env = task.eval_env.env
        system = shield.mjx_system(env, task.spec, int(run.config.env.action_repeat))
        kw = dict(config.constraint_kwargs)
        constraint = safety.make_constraint(config.constraint, action_size=task.action_size, **kw)
        steps = config.num_steps or robust_eval.num_steps(run.config)
        cfg = shield.ShieldConfig(config.horizon, config.num_candidates, config.noise, steps)
        self.critic = safety.SafetyCritic(tuple(config.critic_hidden))
        self.runner = shield.make_runner(system, constraint, cfg, run.apply, self.critic.apply)
        self.observation_size, self.action_size = task.observation_size, task.action_size


def evaluate_seed(built, run, spec, config, conds, s: int) -> dict[str, Any]:
    """Metrics shielded/unshielded on every condition for seed ``s``."""
    pp = jax.tree.map(lambda x: x[s], run.params)
    n = config.episodes
    names = [k for k in conds if k.startswith("worst")] or ["nominal"] * config.num_worst
    worst = np.stack([conds[k][s] for k in names])  # (W, d)
    models = jnp.asarray(np.concatenate([np.asarray(spec.nominal)[None], worst]), jnp.float32)
    critic_params, pos_rate = fit_seed_critic(
        built, pp, spec, config, worst, models, jax.random.PRNGKey(1000 + s)
    )
    knobs = {"shielded": shield.Knobs(jnp.float32(config.tau), jnp.int32(config.every)),
             "unshielded": shield.Knobs(jnp.float32(1.0), jnp.int32(0))}  # fmt: skip
    keys = jax.random.split(jax.random.PRNGKey(config.eval_seed), n)
    out = {"critic_positive_rate": pos_rate, "conditions": {}}
    for name, thetas in conds.items():
        row = {}
        for mode, kn in knobs.items():
            args = (pp, critic_params, _episodes(thetas[s], n), models, keys, kn)
            trace, per_step = shield.timed(built.runner.run, *args)
            m = shield.metrics(trace)
            m["us_per_step"] = 1e6 * per_step
            row[mode] = m
        out["conditions"][name] = row
    return out


def summarize(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """IQM and 95% bootstrap CI over seeds of each metric, per mode, for the condition groups
    ``nominal``, ``worst`` and ``grid`` (mean over the grid points of a seed)."""
    groups: dict[str, dict[str, dict[str, list[float]]]] = {}
    for seed in per_seed:
        by_group: dict[str, list[dict[str, Any]]] = {}
        for name, row in seed["conditions"].items():
            by_group.setdefault(name.split(" ")[0], []).append(row)
        for group, rows in by_group.items():
            for mode in ("shielded", "unshielded"):
                cell = groups.setdefault(group, {}).setdefault(mode, {m: [] for m in METRICS})
                for m in METRICS:
                    cell[m].append(float(np.mean([r[mode][m] for r in rows])))
    table = {}
    for group, modes in groups.items():
        for mode, metrics in modes.items():
            table.setdefault(group, {})[mode] = {
                m: {"iqm": stats.iqm(v), "ci": list(stats.bootstrap_ci(v)),
                    "values": v} for m, v in metrics.items()
            }  # fmt: skip
    return table


def markdown(table: dict[str, Any], algo: str) -> str:
    """One row per (condition group, mode): IQM [95% CI] of each metric."""
    head = "| algo | conditions | mode | " + " | ".join(METRICS) + " |"
    rows = [head, "|" + "---|" * (len(METRICS) + 3)]
    for group, modes in table.items():
        for mode, metrics in modes.items():
            cells = [f"{metrics[m]['iqm']:.3g} [{metrics[m]['ci'][0]:.3g}, "
                     f"{metrics[m]['ci'][1]:.3g}]" for m in METRICS]  # fmt: skip
            rows.append(f"| {algo} | {group} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


PLOT_FILE = "shield.png"
PLOT_METRICS = ("violation_rate", "intervention_rate", "call_rate", "return")


def plot(table: dict[str, Any], path: str, title: str = "") -> str:
    """Bars of IQM with 95% CI whiskers, shielded vs unshielded, per condition group, one panel
    per metric of :data:`PLOT_METRICS`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(table)
    fig, axes = plt.subplots(1, len(PLOT_METRICS), figsize=(3.2 * len(PLOT_METRICS), 3.4))
    x = np.arange(len(groups))
    for ax, metric in zip(axes, PLOT_METRICS, strict=True):
        for j, mode in enumerate(("unshielded", "shielded")):
            cells = [table[g][mode][metric] for g in groups]
            iqm = np.array([c["iqm"] for c in cells])
            err = np.abs(np.array([c["ci"] for c in cells]).T - iqm)
            ax.bar(x + (j - 0.5) * 0.38, iqm, 0.38, yerr=err, capsize=3, label=mode)
        ax.set_xticks(x, groups)
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate_run(workdir: str, config: Any) -> dict[str, Any]:
    """Writes ``shield.json`` (per seed, per condition, per mode; summary table) and the plot
    ``shield.png`` into ``workdir`` and returns the JSON dict."""
    out = evaluate(workdir, config)
    with open(os.path.join(workdir, SHIELD_FILE), "w") as f:
        json.dump(out, f, indent=2, default=float)
    n = len(out["per_seed"])
    plot(out["table"], os.path.join(workdir, PLOT_FILE),
         f"{out['algo']}: IQM [95% CI] over {n} seeds")  # fmt: skip
    return out


def windtunnel_report(workdir: str, config: Any) -> dict[str, Any]:
    """The wind tunnel's violation rates with and without the shield: :func:`evaluate` on the
    nominal model and the worst cases of ``windtunnel.json`` (no grid), added to that file as
    its ``shield`` section (table, markdown, per-seed rows); returns the section."""
    if not os.path.exists(os.path.join(workdir, wt.WINDTUNNEL_FILE)):
        raise FileNotFoundError(f"no {wt.WINDTUNNEL_FILE} in {workdir}: run the wind tunnel first")
    config = config.copy_and_resolve_references()  # the caller's config stays as it was
    config.grid = False
    res = evaluate(workdir, config)
    section = {k: res[k] for k in ("table", "markdown", "per_seed", "conditions", "config")}
    path = os.path.join(workdir, wt.WINDTUNNEL_FILE)
    with open(path) as f:
        report = json.load(f)
    report["shield"] = section
    with open(path, "w") as f:
        json.dump(report, f, indent=2, default=float)
    return section


def evaluate(workdir: str, config: Any) -> dict[str, Any]:
    """Shielded vs unshielded metrics of every seed of the run in ``workdir`` (see the module
    docstring); returns the JSON dict (algo, table, markdown, per_seed, conditions, config)."""
    validate_config(config)
    run = loaders.load_run(workdir)
    task = tasks.make_task(run.config, train_sampler=False)
    conds = conditions(workdir, task.spec, config, run.config, run.num_seeds)
    built = _Built(run, task, config)
    per_seed = []
    for s in range(run.num_seeds):
        start = time.perf_counter()
        print(f"shield: seed {s + 1}/{run.num_seeds}: critic + {len(conds)} conditions ...",
              flush=True)  # fmt: skip
        per_seed.append(evaluate_seed(built, run, task.spec, config, conds, s))
        print(f"shield: seed {s + 1} done in {time.perf_counter() - start:.0f} s", flush=True)
    table = summarize(per_seed)
    algo = str(run.config.get("algo"))
    out = {"algo": algo, "workdir": os.path.abspath(workdir), "table": table,
           "markdown": markdown(table, algo), "per_seed": per_seed,
           "conditions": {k: v.tolist() for k, v in conds.items()},
           "config": config.to_dict() if hasattr(config, "to_dict") else dict(config)}  # fmt: skip
    return out
