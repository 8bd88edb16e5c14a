"""Behaviour analysis of rollouts vs the demonstrations, and top-down pictures (matplotlib).

"Pushcut" analogue (SimpleVLA-RL, FLOWRL.md §6.4): the expert only ever pushes the puck from
directly behind it along the goal line, after walking around it. :func:`behaviour_stats` measures,
per task, how long successful episodes take, how many control steps touch the puck, and the
fraction of contact steps that are *off-axis* (the gripper-to-puck direction more than 45 degrees
from the puck-to-goal direction), a way of pushing that the demonstrations never contain.
"""

from __future__ import annotations

import os

import numpy as np

from vla import envs
from vla.rollout import Rollout

OFF_AXIS_COS = float(np.cos(np.deg2rad(45.0)))


def off_axis_contacts(ro: Rollout, goals: np.ndarray) -> np.ndarray:
    """bool[N, S]: contact steps whose push direction is > 45 degrees off the goal line."""
    grip, puck = np.asarray(ro.gripper), np.asarray(ro.puck)
    push = puck - grip
    to_goal = goals[:, None, :] - puck
    cos = np.sum(push * to_goal, -1) / (
        np.linalg.norm(push, axis=-1) * np.linalg.norm(to_goal, axis=-1) + 1e-9
    )
    return (np.asarray(ro.contact) > 0) & (cos < OFF_AXIS_COS)


def behaviour_stats(ro: Rollout, scenes: envs.Scene, task_names, per_task: int) -> dict:
    """Per task: success, mean finish step of successes, contact steps and off-axis contact
    fraction (steps up to the finish step only). ``ro`` leaves [N, ...], N = T * per_task."""
    steps = np.arange(np.asarray(ro.contact).shape[1])[None, :]
    live = steps < np.asarray(ro.finish_step)[:, None]
    contact = (np.asarray(ro.contact) > 0) & live
    off = off_axis_contacts(ro, np.asarray(scenes.goal)) & live
    success = np.asarray(ro.success) > 0
    out = {}
    for t, name in enumerate(task_names):
        rows = slice(t * per_task, (t + 1) * per_task)
        s = success[rows]
        fin = np.asarray(ro.finish_step)[rows]
        out[name] = {
            "success": float(s.mean()),
            "finish_step_of_successes": float(fin[s].mean()) if s.any() else float("nan"),
            "contact_steps": float(contact[rows].sum(1).mean()),
            "off_axis_contact_frac": float(off[rows].sum() / max(contact[rows].sum(), 1)),
        }
    return out


def _draw(ax, scene: dict, ro: dict, title: str) -> None:
    import matplotlib.patches as mpatches

    colours = ("tab:red", "tab:green", "tab:blue")
    for k, xy in enumerate(scene["targets"]):
        ax.add_patch(mpatches.Circle(xy, 0.1, color=colours[k], alpha=0.25))
    if scene["task"] > 0:
        ax.add_patch(mpatches.Circle(scene["goal"], 0.1, fill=False, ls="--", color="k"))
    n = int(ro["finish_step"])
    g = np.vstack([scene["gripper"], ro["gripper"][:n]])
    p = np.vstack([scene["puck"], ro["puck"][:n]])
    ax.plot(g[:, 0], g[:, 1], "-o", ms=2, color="tab:orange", label="gripper")
    ax.plot(p[:, 0], p[:, 1], "-s", ms=2, color="tab:gray", label="puck")
    ax.plot(*g[-1], "o", color="tab:orange", ms=8, mfc="none")
    ax.set_xlim(-envs.ARENA, envs.ARENA)
    ax.set_ylim(-envs.ARENA, envs.ARENA)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title}: {'success' if ro['success'] else 'fail'} ({n} steps)", fontsize=7)


def _pick(tree, i: int) -> dict:
    return {k: np.asarray(v)[i] for k, v in tree._asdict().items()}


def plot_trajectories(path: str, scenes: envs.Scene, rollouts: dict, rows: list[int], names):
    """Top-down drawing: one row per scene index in ``rows``, one column per named rollout set
    (``rollouts``: name -> Rollout with leaves [N, ...])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(rollouts)
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.2 * len(cols), 2.2 * len(rows)))
    axes = np.atleast_2d(axes)
    for r, i in enumerate(rows):
        for c, name in enumerate(cols):
            _draw(axes[r, c], _pick(scenes, i), _pick(rollouts[name], i), f"{names[r]} | {name}")
    axes[0, 0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_gif(path: str, scenes: envs.Scene, rollouts: dict, i: int, fps: int = 6) -> str:
    """Animated top-down rollout of scene ``i``, one panel per named rollout set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    scene = _pick(scenes, i)
    picked = {k: _pick(v, i) for k, v in rollouts.items()}
    length = max(int(r["finish_step"]) for r in picked.values())
    fig, axes = plt.subplots(1, len(picked), figsize=(2.6 * len(picked), 2.8))

    def frame(t):
        for ax, (name, ro) in zip(np.atleast_1d(axes), picked.items(), strict=True):
            ax.clear()
            shown = dict(ro, finish_step=min(t + 1, int(ro["finish_step"])))
            _draw(ax, scene, shown, name)

    anim = FuncAnimation(fig, frame, frames=length, interval=1000 // fps)
    anim.save(path, writer=PillowWriter(fps=fps))
    plt.close(fig)
    return path
