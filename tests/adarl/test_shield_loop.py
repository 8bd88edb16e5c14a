"""The shield inside a trainer's acting loop (PPO's action-filter hook) on the point-mass toy."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from adarl import acting, ppo, safety, shield, shield_toy

THETA = shield_toy.WORST_CORNER  # heaviest, undamped, strongest push toward the wall
N_ENVS, N_STEPS, UPDATES = 8, 100, 2


def _ppo_config():
    c = ml_collections.ConfigDict()
    c.num_envs, c.num_steps, c.minibatch_size = N_ENVS, N_STEPS, 400
    c.epochs, c.num_updates, c.lr, c.anneal_lr, c.adam_eps = 1, UPDATES, 3e-4, True, 1e-5
    c.gamma, c.gae_lambda, c.clip_eps, c.ent_coef, c.max_grad_norm = 0.99, 0.95, 0.2, 0.01, 0.5
    c.hidden = (8,)
    c.normalize_obs, c.reward_scaling, c.normalize_advantages = True, True, True
    return c


def _shield_filter(env):
    constraint = safety.make_constraint("point_mass", wall=shield_toy.WALL)
    # the verifier's models: the true one (the guarantee's assumption) and the nominal one
    thetas = jnp.stack([jnp.asarray(THETA, jnp.float32), env.system.nominal])
    knobs = shield.Knobs(jnp.float32(0.0), jnp.int32(0))  # τ = 0: verify every step
    return shield.make_action_filter(env.system, constraint, shield_toy.CFG, thetas, knobs,
                                     inner=lambda st: st.inner)  # fmt: skip


def _train(action_filter):
    env = shield_toy.BatchedPointMass(THETA)
    filt = action_filter(env) if callable(action_filter) else acting.identity_filter
    fns = ppo.make_ppo(_ppo_config(), env, action_filter=filt)
    update = jax.jit(fns.update)
    state = jax.jit(fns.init)(jax.random.PRNGKey(0))
    metrics = []
    for _ in range(UPDATES):
        state, m = update(state)
        metrics.append(m)
    return state, metrics, update


@pytest.fixture(scope="module")
def runs():
    return {
        "default": _train(None),
        "identity": _train(lambda env: lambda st, a, k: acting.identity_filter(st, a, k)),
        "shield": _train(_shield_filter),
    }


def test_identity_filter_changes_nothing(runs):
    # A filter that is not the default object takes the hooked path (and logs shield metrics);
    # an identity there must leave every array of the training state bit-identical.
    (a, _, _), (b, mb, _) = runs["default"], runs["identity"]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert float(mb[-1]["shield/call_rate"]) == 0.0


def test_shielded_training_never_violates_while_unshielded_does(runs):
    unshielded = int(runs["default"][0].env_state.info["violations"].sum())
    shielded = int(runs["shield"][0].env_state.info["violations"].sum())
    assert unshielded >= 1  # sanity: the push drives the untrained policy through the wall
    assert shielded == 0


def test_shield_metrics_calls_and_interventions(runs):
    _, metrics, _ = runs["shield"]
    for m in metrics:
        assert float(m["shield/call_rate"]) == 1.0  # τ = 0
        # far from the wall the proposal is certified and kept: fewer interventions than calls
        assert 0.0 < float(m["shield/intervention_rate"]) < float(m["shield/call_rate"])
    assert "shield/call_rate" not in runs["default"][1][0]


def test_shielded_update_compiles_once(runs):
    _, _, update = runs["shield"]
    assert update._cache_size() == 1


def test_rollout_keeps_the_proposal_and_steps_the_filtered_action():
    env = shield_toy.BatchedPointMass(THETA)

    def brake(state, actions, key):  # always executes full reverse thrust
        del key
        ones = jnp.ones(actions.shape[:1], bool)
        return -jnp.ones_like(actions), acting.FilterInfo(ones, ones)

    fns = ppo.make_ppo(_ppo_config(), env, action_filter=brake)
    state = fns.init(jax.random.PRNGKey(1))
    _, traj, metrics = jax.jit(lambda s: ppo.rollout(fns.setup, s))(state)
    assert bool((jnp.abs(traj.action) < 1.0).any())  # proposals are kept (not all -1)
    # the env stepped -1 from rest: v1 = dt·(-1/mass + push), x1 = x0 + dt·v1
    mass, _, push = THETA
    v1 = 0.05 * (-1.0 / mass + push)
    np.testing.assert_allclose(traj.obs[1, :, 1], v1, rtol=1e-5)
    np.testing.assert_allclose(traj.obs[1, :, 0], traj.obs[0, :, 0] + 0.05 * v1, rtol=1e-5)
    assert float(metrics["shield/intervention_rate"]) == 1.0
