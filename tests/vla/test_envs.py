"""The tasks' success predicate, on hand-built states and on simulated expert episodes."""

import jax.numpy as jnp
import numpy as np
import pytest

from vla import envs


def _scene(task: int, goal=(0.5, 0.0), colour=1):
    targets = jnp.array([[-0.5, 0.5], [0.5, 0.5], [0.0, -0.5]])
    zero = jnp.zeros(2)
    return envs.Scene(
        jnp.int32(task), zero, zero, jnp.array(goal), targets, jnp.int32(colour),
        jnp.zeros(envs.INSTRUCTION_LEN, jnp.int32), jnp.int32(10),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("task", "gripper", "puck", "stage", "success", "new_stage"),
    [
        (0, (0.5, 0.45), (0, 0), False, True, False),  # at the named (green) target
        (0, (-0.5, 0.5), (0, 0), False, False, False),  # at the wrong (red) target
        (0, (0.5, 0.62), (0, 0), False, False, False),  # just outside the radius
        (1, (0, 0), (0.45, 0.05), False, True, True),  # puck in the goal region
        (1, (0.5, 0.0), (0.2, 0.0), False, False, False),  # gripper in the goal: not enough
        (2, (0.5, 0.5), (0.0, 0.0), False, False, False),  # target first: not yet
        (2, (0.5, 0.5), (0.0, 0.0), True, True, True),  # stage latched, then target
        (2, (0.0, 0.0), (0.5, 0.0), False, False, True),  # puck in goal: stage latches
        (2, (0.5, 0.5), (0.5, 0.0), False, False, True),  # both at once: stage first
        (2, (0.5, 0.5), (0.0, 0.0), False, False, False),  # target without the stage
    ],
)
def test_success_predicate(task, gripper, puck, stage, success, new_stage):
    got, got_stage = envs.success_predicate(
        _scene(task), jnp.array(gripper), jnp.array(puck), jnp.bool_(stage), 0.1
    )
    assert bool(got) == success and bool(got_stage) == new_stage


def test_instructions_name_the_task_and_colour():
    scenes = envs.make_scenes(("reach", "push", "push_reach"), 3, seed=0)
    words = [[envs.WORDS[i] for i in row if i] for row in np.asarray(scenes.instruction)]
    colours = np.asarray(scenes.colour)
    assert words[0] == ["reach", envs.COLOURS[colours[0]]]
    assert words[3] == ["push", "puck", "to", "goal"]
    assert words[6] == ["push", "puck", "then", "reach", envs.COLOURS[colours[6]]]


def test_expert_episodes_succeed_where_the_predicate_first_holds(trainer):
    """The recorded simulator positions satisfy the predicate first at ``finish_step``."""
    setup = trainer.setup
    demos = setup.demos
    assert np.all(np.asarray(demos.success) == 1.0)
    scenes = [
        {k: np.asarray(v)[i] for k, v in setup.table._asdict().items()} for i in setup.scene_idx
    ]
    for i, sc in enumerate(scenes):
        g, p = np.asarray(demos.gripper[i]), np.asarray(demos.puck[i])
        target = sc["targets"][sc["colour"]]
        at_target = np.linalg.norm(g - target, axis=-1) < 0.1
        in_goal = np.linalg.norm(p - sc["goal"], axis=-1) < 0.1
        stage = np.concatenate([[False], np.maximum.accumulate(in_goal)[:-1]])  # earlier steps
        ok = [at_target, in_goal, stage & at_target][sc["task"]]
        assert int(np.argmax(ok)) + 1 == int(demos.finish_step[i])
        assert int(demos.finish_step[i]) <= sc["max_steps"]
    # Pushing tasks touch the puck, reaching does not need to.
    contact = np.asarray(demos.contact).sum(1)
    per_task = len(setup.scene_idx) // 3
    assert contact[per_task:].min() > 0
