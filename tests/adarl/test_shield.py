"""Shield (fast critic + slow verifier) on the pure-JAX point mass and wall (§1.5 tests)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness
from adarl import safety, shield, shield_toy
from adarl import windtunnel as wt

WALL = shield_toy.WALL
T = shield_toy.NUM_STEPS
B = 256
CFG = shield_toy.CFG
SPACE = shield_toy.SPACE
policy_apply = shield_toy.policy_apply
critic_apply = shield_toy.critic_apply


@pytest.fixture(scope="module")
def toy():
    system = safety.point_mass_system()
    constraint = safety.make_constraint("point_mass", wall=WALL)
    runner = shield.make_runner(system, constraint, CFG, policy_apply, critic_apply)
    ball = wt.make_ball("box", SPACE, 1.0)
    true = jax.vmap(ball.to_params)(ball.sample(jax.random.PRNGKey(1), B))[:, 0]
    # verifier models: the true model (the design's assumption) and the nominal one
    nominal = jnp.broadcast_to(system.nominal, true.shape)
    models = jnp.stack([true, nominal], axis=1)  # (B, 2, 3)
    keys = jax.random.split(jax.random.PRNGKey(2), B)

    def run(tau, every=0, gain=1.0, w=10.0, m=models):
        knobs = shield.Knobs(jnp.float32(tau), jnp.int32(every))
        return runner.run(jnp.float32(gain), jnp.float32(w), true, m, keys, knobs)

    return dict(system=system, constraint=constraint, runner=runner, run=run, true=true)


@pytest.fixture(scope="module")
def shielded(toy):
    return toy["run"](0.0)


@pytest.fixture(scope="module")
def unshielded(toy):
    return toy["run"](1.0)


def test_toy_shield_never_violates_while_unshielded_policy_does(shielded, unshielded):
    assert int(shielded.violated.sum()) == 0
    assert int(unshielded.violated.any(-1).sum()) >= 1
    m = shield.metrics(shielded)
    assert m["violation_rate"] == 0.0 and m["intervention_rate"] > 0.0
    # the shield pays in return (reward = position): it must stop short of the wall
    assert m["return"] < shield.metrics(unshielded)["return"]


def test_tau_zero_always_calls_tau_one_never(shielded, unshielded):
    assert bool(shielded.called.all())
    assert not bool(unshielded.called.any())
    assert not bool(unshielded.intervened.any())
    np.testing.assert_array_equal(unshielded.action, unshielded.proposal)


@pytest.mark.parametrize("tau, every", [(0.0, 0), (0.5, 0), (0.9, 5), (1.0, 7)])
def test_calls_follow_the_critic_and_period_and_bound_interventions(toy, tau, every):
    trace = toy["run"](tau, every)
    t = np.arange(T)[None, :]
    periodic = (every > 0) & (t % max(every, 1) == 0)
    expected = ((np.asarray(trace.risk) > tau) | periodic) & np.asarray(trace.alive)
    if tau == 0.0:
        expected = np.ones_like(expected)
    np.testing.assert_array_equal(np.asarray(trace.called), expected)
    assert np.all(np.asarray(trace.intervened) <= np.asarray(trace.called))
    moved = (np.asarray(trace.action) != np.asarray(trace.proposal)).any(-1)
    np.testing.assert_array_equal(moved, np.asarray(trace.intervened))


def test_compiles_once_per_configuration(toy, shielded, unshielded):
    toy["run"](0.3, 4, gain=0.8, w=5.0)
    toy["run"](0.7, 0, gain=1.0, w=1.0, m=jnp.stack([toy["true"]] * 2, axis=1))
    assert len(toy["runner"].traces) == 1
    assert toy["runner"].run._cache_size() == 1


def test_noop_when_every_action_is_certified(toy):
    always_safe = safety.Constraint(
        "none",
        cost=lambda obs: -jnp.ones(()),
        recoverable=lambda obs: jnp.ones((), bool),
        backup=lambda obs: -jnp.ones((1,)),
    )
    runner = shield.make_runner(toy["system"], always_safe, CFG, policy_apply, critic_apply)
    keys = jax.random.split(jax.random.PRNGKey(3), 8)
    args = (jnp.float32(0.7), jnp.float32(1.0), toy["true"][:8], toy["system"].nominal[None])
    on = runner.run(*args, keys, shield.Knobs(jnp.float32(0.0), jnp.int32(0)))
    off = runner.run(*args, keys, shield.Knobs(jnp.float32(1.0), jnp.int32(0)))
    assert bool(on.called.all()) and not bool(on.intervened.any())
    for a, b in zip(
        jax.tree.leaves(on._replace(called=off.called)), jax.tree.leaves(off), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_verifier_certifies_far_from_wall_and_rejects_near_it(toy):
    system, constraint = toy["system"], toy["constraint"]
    thetas = system.nominal[None]
    acts = jnp.array([[1.0], [-1.0]])
    far = safety.PointMassState(jnp.float32(-1.0), jnp.float32(0.0), jnp.float32(0.0))
    verify = jax.jit(lambda s: shield.verify(system, constraint, 20, s, acts, thetas))
    ok, cost = verify(far)
    assert ok.tolist() == [True, True] and bool((cost <= 0).all())
    # at x = 0.9 moving at 2 m/s no action can stop before the wall (needs ~2 m)
    near = safety.PointMassState(jnp.float32(0.9), jnp.float32(2.0), jnp.float32(0.0))
    ok, cost = verify(near)
    assert ok.tolist() == [False, False] and bool((cost > 0).all())
    # a certified candidate closest to a_f wins; the backup when none is certified
    cands = jnp.array([[1.0], [0.2], [0.5], [-1.0]])
    pick = shield.choose(cands, jnp.array([False, True, True, True]), cands[0], cands[3])
    assert float(pick[0]) == 0.5
    pick = shield.choose(cands, jnp.zeros(4, bool), cands[0], cands[3])
    assert float(pick[0]) == -1.0


def test_threshold_logit_endpoints():
    assert float(shield.threshold_logit(0.0)) == -np.inf
    assert float(shield.threshold_logit(1.0)) == np.inf
    np.testing.assert_allclose(float(shield.threshold_logit(0.5)), 0.0, atol=1e-6)


def test_violation_labels_golden():
    # one env, H = 2; violations at t = 3 and t = 6; the episode ends after t = 4
    v = jnp.array([0, 0, 0, 1, 0, 0, 1, 0], bool)[:, None]
    d = jnp.array([0, 0, 0, 0, 1, 0, 0, 0], bool)[:, None]
    y = safety.violation_labels(v, d, 2)[:, 0]
    # t=2: 3 ∈ {2,3} → 1; t=3 → 1; t=4,5: 6 is in the next episode for 4, within 2 for 5
    assert y.tolist() == [0, 0, 1, 1, 0, 1, 1, 0]


@pytest.mark.parametrize("name", safety.CONSTRAINTS.names())
def test_registered_constraints_are_jittable_and_signed(name):
    c = safety.make_constraint(name)
    obs = jnp.zeros((17,))
    g = jax.jit(c.cost)(obs)
    assert g.shape == () and np.isfinite(float(g))
    assert jax.jit(c.recoverable)(obs).dtype == bool
    assert c.backup(obs).ndim == 1
    big = obs.at[:3].set(50.0)  # far outside any limit
    assert float(c.cost(big)) > 0


def test_unknown_constraint_raises_config_error():
    with pytest.raises(harness.ConfigError, match="shield.constraint"):
        safety.make_constraint("nope")


@pytest.mark.slow  # ~20 s: fits the critic and compiles a second runner
def test_learned_critic_separates_risky_states_and_drives_the_shield(toy, unshielded, shielded):
    # Fast model trained on unshielded + shielded rollouts, labelled with the *executed* action.
    # Measured (this fixture): accuracy 0.96 vs base rate 0.63; with τ = 0.05 the shield calls
    # the verifier on ~69% of steps and 69% of episodes still violate (100% unshielded): the
    # critic alone gives no guarantee (the τ = 0 test above does).
    def flat(tr):
        y = safety.violation_labels(jnp.swapaxes(tr.violated, 0, 1), jnp.zeros((T, B), bool), 20)
        return tr.obs.reshape(-1, 2), tr.action.reshape(-1, 1), jnp.swapaxes(y, 0, 1).ravel()

    data = [flat(unshielded), flat(shielded)]
    obs, act, y = (jnp.concatenate(a) for a in zip(*data, strict=True))
    params, apply = safety.fit_critic(jax.random.PRNGKey(0), obs, act, y, hidden=(32,), steps=300)
    pred = jax.nn.sigmoid(apply(params, obs, act)) > 0.5
    assert float((pred == (y > 0.5)).mean()) > 0.9
    runner = shield.make_runner(
        toy["system"], toy["constraint"], CFG, policy_apply, lambda p, o, a: apply(p, o, a)
    )
    keys = jax.random.split(jax.random.PRNGKey(2), 64)
    models = jnp.stack([toy["true"][:64], toy["true"][:64]], 1)
    tr = runner.run(jnp.float32(1.0), params, toy["true"][:64], models, keys,
                    shield.Knobs(jnp.float32(0.05), jnp.int32(0)))  # fmt: skip
    m = shield.metrics(tr)
    assert m["call_rate"] < 1.0  # the critic saves verifier calls ...
    assert m["violation_rate"] < shield.metrics(unshielded)["violation_rate"]  # ... and still helps


@pytest.mark.slow  # trains a smoke run first (minutes of MJX compiles on CPU)
def test_shield_experiment_on_a_smoke_run(tmp_path):
    import json

    from adarl import shield_eval, train
    from experiments.configs import adarl as adarl_cfgs
    from experiments.configs import shield as shield_cfgs
    from experiments.configs import windtunnel as wt_cfgs

    rc = adarl_cfgs.get_config("smoke")
    rc.env.name = "CartpoleSwingup"
    train.train_and_evaluate(rc, str(tmp_path))
    wc = wt_cfgs.get_config("smoke")
    wc.grid = False
    wt.evaluate_run(str(tmp_path), wc)
    # the wind tunnel's report: nominal + the worst cases, with and without the shield
    section = shield_eval.windtunnel_report(str(tmp_path), wc.shield)
    with open(tmp_path / wt.WINDTUNNEL_FILE) as f:
        assert set(json.load(f)["shield"]["table"]) == {"nominal", "worst"}
    assert set(section["conditions"]) == {"nominal", "worst #1", "worst #2"}
    out = shield_eval.evaluate_run(str(tmp_path), shield_cfgs.get_config("smoke"))
    assert set(out["table"]) == {"nominal", "worst", "grid"}
    for seed in out["per_seed"]:
        for row in seed["conditions"].values():
            assert row["unshielded"]["call_rate"] == 0.0
            s = row["shielded"]
            assert 0.0 <= s["intervention_rate"] <= s["call_rate"] <= 1.0
    assert (tmp_path / shield_eval.SHIELD_FILE).exists()


def test_worst_cases_from_windtunnel_json(tmp_path):
    import json

    from adarl import shield_eval

    class Spec:
        names = ("a", "b")
        nominal = np.array([1.0, 2.0], np.float32)

    def case(a, b):
        return {"params": [{"a": a, "b": b}]}

    per_seed = [
        # worst point, then failures worst first; the first failure repeats the worst point
        {"worst_params": [{"a": 5.0}], "failures": [case(5.0, 2.0), case(3.0, 1.0), case(4, 4)]},
        {"worst_params": [{"b": 7.0}], "failures": []},  # too few: the worst point repeats
    ]
    assert shield_eval.worst_cases(str(tmp_path), Spec, 2, 2) is None  # no windtunnel.json
    (tmp_path / wt.WINDTUNNEL_FILE).write_text(json.dumps({"per_seed": per_seed}))
    got = shield_eval.worst_cases(str(tmp_path), Spec, 2, 2)
    np.testing.assert_array_equal(got[0], [[5.0, 2.0], [3.0, 1.0]])
    np.testing.assert_array_equal(got[1], [[1.0, 7.0], [1.0, 7.0]])
