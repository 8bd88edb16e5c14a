"""Closed-loop rollouts: observation -> one parallel chunk of action tokens -> ``chunk`` env steps,
until success or the task's step cap (SimpleVLA-RL ``rob_rollout``, FLOWRL.md §6.1).

Everything is one ``lax.scan`` over chunks with an inner scan over the chunk's control steps, so a
batch of episodes is a single jitted call. ``use_expert`` (traced) swaps the policy's actions for
the scripted expert's, closed loop at every control step; the recorded bins are then the expert
actions' bins, which is how the demonstrations are tokenised.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from mujoco import mjx

from ssm import lm
from vla import envs, expert, policy
from vla.tokens import ActionBounds, action_to_bin, bin_to_action, prompt_tokens

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """Static rollout settings: chunk length (control steps), chunks per episode (the longest
    task's cap / chunk, rounded up), observation bins and the success radius."""

    chunk: int
    num_chunks: int
    obs_bins: int
    radius: float


class Rollout(NamedTuple):
    """A batch of B episodes (C chunks, S = C * chunk control steps, A = chunk * ACTION_DIM).

    Attributes:
      prompts: i32[B, C, L] policy inputs at each chunk start.
      bins: i32[B, C, A] action bins emitted (or the expert's, quantised).
      logp: f32[B, C, A] log pi_T of ``bins`` at the rollout temperature.
      chunk_mask: f32[B, C] 1 for chunks started before success and before the cap.
      success: f32[B] binary outcome; finish_step: i32[B] control steps until success (the cap
        if none).
      actions: f32[B, S, 2] executed actions; gripper, puck: f32[B, S, 2] positions after each
        control step; contact: f32[B, S] gripper-puck contact after each control step.
    """

    prompts: Array
    bins: Array
    logp: Array
    chunk_mask: Array
    success: Array
    finish_step: Array
    actions: Array
    gripper: Array
    puck: Array
    contact: Array


class _Carry(NamedTuple):
    data: mjx.Data
    stage: Array  # bool[B]
    done: Array  # bool[B]
    finish: Array  # i32[B]
    t: Array  # i32[] control steps so far


def _control_step(scenes: envs.Scene, radius: float, use_expert, carry: _Carry, action: Array):
    """One control step of the whole batch; returns the new carry and the step's records."""
    grip, puck = carry.data.qpos[:, :2], carry.data.qpos[:, 2:4]
    exp = jax.vmap(expert.expert_action)(scenes, grip, puck, carry.stage)
    action = jnp.where(use_expert, exp, action)
    data = jax.vmap(envs.physics_step)(carry.data, action)
    grip, puck = data.qpos[:, :2], data.qpos[:, 2:4]
    success, stage = jax.vmap(envs.success_predicate, in_axes=(0, 0, 0, 0, None))(
        scenes, grip, puck, carry.stage, radius
    )
    t = carry.t + 1
    new = success & ~carry.done & (t <= scenes.max_steps)
    finish = jnp.where(new, t, carry.finish)
    records = (action, grip, puck, jax.vmap(envs.contact)(grip, puck).astype(jnp.float32))
    return _Carry(data, stage, carry.done | new, finish, t), records


def rollout(
    model: lm.LM,
    params: Any,
    bounds: ActionBounds,
    scenes: envs.Scene,
    key: Array,
    temperature: Array,
    use_expert: Array,
    cfg: RolloutConfig,
) -> Rollout:
    """Runs B = len(scenes) episodes; ``temperature <= 0`` decodes greedily."""
    b = scenes.task.shape[0]
    data = jax.vmap(envs.reset)(scenes)
    zeros = jnp.zeros((b,), bool)
    carry = _Carry(data, zeros, zeros, scenes.max_steps.astype(jnp.int32), jnp.zeros((), jnp.int32))

    def chunk_body(carry: _Carry, key_c: Array):
        grip, puck = carry.data.qpos[:, :2], carry.data.qpos[:, 2:4]
        obs = jax.vmap(envs.observation)(scenes, grip, puck, carry.stage)
        prompts = prompt_tokens(scenes.instruction, obs, cfg.obs_bins, cfg.chunk)
        logits = policy.bin_logits(model, params, prompts, cfg.chunk)
        bins = policy.sample_bins(key_c, logits, temperature)
        planned = bin_to_action(bins.reshape(b, cfg.chunk, envs.ACTION_DIM), bounds)
        active = (~carry.done & (carry.t < scenes.max_steps)).astype(jnp.float32)

        def step(c, a):
            return _control_step(scenes, cfg.radius, use_expert, c, a)

        carry, records = jax.lax.scan(step, carry, jnp.swapaxes(planned, 0, 1))
        executed = jnp.swapaxes(records[0], 0, 1)  # [B, chunk, 2]
        bins = jnp.where(use_expert, action_to_bin(executed, bounds).reshape(b, -1), bins)
        temp = jnp.where(temperature > 0, temperature, 1.0)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits / temp, -1), bins[..., None], -1)
        return carry, (prompts, bins, logp[..., 0], active, records)

    keys = jax.random.split(key, cfg.num_chunks)
    carry, (prompts, bins, logp, active, records) = jax.lax.scan(chunk_body, carry, keys)
    steps = [jnp.moveaxis(r, (0, 1, 2), (1, 2, 0)).reshape(b, -1, *r.shape[3:]) for r in records]
    return Rollout(
        prompts=jnp.swapaxes(prompts, 0, 1),
        bins=jnp.swapaxes(bins, 0, 1),
        logp=jnp.swapaxes(logp, 0, 1),
        chunk_mask=jnp.swapaxes(active, 0, 1),
        success=carry.done.astype(jnp.float32),
        finish_step=carry.finish,
        actions=steps[0],
        gripper=steps[1],
        puck=steps[2],
        contact=steps[3],
    )
