"""Coevolution: the Pareto gate on fake metric streams, the bounded failure bank, the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adarl import coevolve as co

# ---------------------------------------------------------------------------------------------
# Gate
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref, cand, accepted",
    [
        # worst improves by 5 ≥ δ = 1, nominal falls by 2 ≤ β = 3 → accept
        ((100.0, 50.0), (98.0, 55.0), True),
        # worst improves by 0.5 < δ → reject
        ((100.0, 50.0), (100.0, 50.5), False),
        # nominal falls by 4 > β → reject although worst improves a lot
        ((100.0, 50.0), (96.0, 80.0), False),
        # exactly on both boundaries (+1 worst, −3 nominal) → accept
        ((100.0, 50.0), (97.0, 51.0), True),
    ],
)
def test_gate_rule(ref, cand, accepted):
    ok, reason = co.gate(
        co.RoundMetrics(*ref), co.RoundMetrics(*cand), min_improvement=1.0, nominal_budget=3.0
    )
    assert ok is accepted, reason


def test_gate_regression_suite():
    ref, cand = co.RoundMetrics(100.0, 50.0), co.RoundMetrics(100.0, 60.0, bank_return=40.0)
    kw = dict(min_improvement=1.0, nominal_budget=3.0, regression_tol=5.0)
    assert not co.gate(ref, cand, reference_bank_return=46.0, **kw)[0]  # 40 < 46 − 5
    assert co.gate(ref, cand, reference_bank_return=44.0, **kw)[0]


def test_loop_on_fake_stream_accepts_only_pareto_rounds_and_stops():
    # Each "training round" yields the next fake checkpoint; its metrics are looked up.
    stream = {
        0: (100.0, 10.0),  # initial
        1: (99.0, 20.0),  # accept (+10 worst, −1 nominal)
        2: (90.0, 40.0),  # reject: nominal −9 > 3
        3: (99.0, 20.5),  # reject: +0.5 < 1
        4: (98.0, 30.0),  # never reached: patience 2 stops after rounds 2, 3
    }
    seen = []

    def train_round(state, bank, key):
        seen.append(state)
        return len(seen)

    def attack(state, bank):
        nominal, worst = stream[state]
        return co.Attack(
            co.RoundMetrics(nominal, worst),
            np.array([[float(state), 0.0]]),
            np.array([worst]),
            np.array([state]),
        )

    state, bank, history = co.run(
        0,
        train_round=train_round,
        attack=attack,
        key=jax.random.PRNGKey(0),
        dim=2,
        scale=np.ones(2),
        capacity=8,
        min_distance=0.5,
        max_rounds=10,
        patience=2,
        min_improvement=1.0,
        nominal_budget=3.0,
    )
    assert [h["accepted"] for h in history] == [True, True, False, False]
    assert state == 1  # the last accepted checkpoint
    assert seen == [0, 1, 1]  # rejected rounds restart from the accepted one
    accepted = [h for h in history if h["accepted"]]
    worst = [h["worst"] for h in accepted]
    assert worst == sorted(worst)  # robust metric non-decreasing on accepted checkpoints
    assert all(accepted[0]["nominal"] - h["nominal"] <= 3.0 for h in accepted)
    assert co.bank_size(bank) == 4  # four distinct failure points were stored


# ---------------------------------------------------------------------------------------------
# Failure bank
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def insert_many():
    return jax.jit(
        lambda b, p, s, sd: co.bank_insert_many(b, p, s, sd, scale=jnp.ones(2), min_distance=0.1)
    )


def test_bank_stays_bounded_and_keeps_most_severe(insert_many):
    rng = np.random.default_rng(0)
    bank = co.bank_init(8, 2)
    p = rng.uniform(-5, 5, size=(100, 2))
    sev = rng.uniform(0, 10, size=100)
    bank = insert_many(bank, p, sev, np.arange(100))
    assert co.bank_size(bank) == 8
    kept = np.sort(np.asarray(bank.severity))
    np.testing.assert_allclose(kept, np.sort(sev)[-8:], rtol=1e-6)
    # The seeds travel with their entries.
    for s, sd in zip(np.asarray(bank.severity), np.asarray(bank.seed), strict=True):
        np.testing.assert_allclose(sev[sd], s, rtol=1e-6)


def test_bank_deduplicates_by_distance(insert_many):
    bank = co.bank_init(4, 2)
    p = np.array([[0.0, 0.0], [0.05, 0.0], [1.0, 1.0]])
    bank = insert_many(bank, p, np.array([1.0, 3.0, 2.0]), np.arange(3))
    assert co.bank_size(bank) == 2  # the second point is within 0.1 of the first
    sev = np.asarray(bank.severity)[np.asarray(bank.valid)]
    np.testing.assert_allclose(np.sort(sev), [2.0, 3.0])  # the duplicate raised the severity


def test_bank_sampling_proportional_to_severity(insert_many):
    bank = co.bank_init(4, 2)
    bank = insert_many(bank, np.array([[0.0, 0.0], [5.0, 5.0]]), np.array([1.0, 3.0]), np.arange(2))
    idx = np.asarray(co.bank_sample(bank, jax.random.PRNGKey(0), 20_000))
    assert set(np.unique(idx)) <= {0, 1}  # never an empty slot
    np.testing.assert_allclose(np.mean(idx == 1), 3.0 / 4.0, atol=0.015)


@pytest.mark.slow
def test_coevolve_smoke_runs_end_to_end(tmp_path):
    """MJX pendulum, PPO: pre-train, attack, two gated rounds (minutes: every round re-jits)."""
    from experiments.configs import coevolve as cfgs

    out = co.train_and_coevolve(cfgs.get_config("smoke"), str(tmp_path))
    hist = out["history"]
    assert hist[0]["reason"] == "initial" and 1 <= len(hist) - 1 <= 2
    assert len(out["bank"]["severity"]) <= 4
    assert (tmp_path / "coevolve.png").exists()


def test_loop_on_a_toy_system_hardens_the_policy():
    """Pure-JAX toy: x' = a·x + b·u, u = -k·x. A policy tuned for the nominal model (k small)
    fails at the wind tunnel's worst (a, b); training on the failure bank raises the worst case
    while the gate keeps the nominal return within its budget."""
    from adarl import windtunnel as wt

    space = wt.Space(("a", "b"), np.array([1.0, 0.5]), np.array([0.1, 0.2]),
                     np.array([0.0, 0.0]), np.array([3.0, 3.0]))  # fmt: skip
    ball = wt.make_ball("box", space, 1.0)

    def returns(theta, k):
        c = theta[:, 0] - theta[:, 1] * k  # closed-loop pole
        return -jnp.sum(c[:, None] ** (2 * jnp.arange(1, 21)), axis=1)  # x0 = 1, 20 steps

    def return_fn(theta, keys, k):
        return returns(theta, k)

    def attack(k, bank):
        res = wt.search(return_fn, ball, jax.random.PRNGKey(0), aux=jnp.array([k]),
                        searchers=("random",), episodes=1,
                        searcher_kwargs={"random": {"num_samples": 64, "batch": 64}})[0]  # fmt: skip
        thr = res.nominal_return - 0.5 * abs(res.nominal_return)
        cases = wt.failure_cases(res, ball, space.names, threshold=thr, eval_seed=0)
        pts = np.array([[c["params"][0]["a"], c["params"][0]["b"]] for c in cases]).reshape(-1, 2)
        return co.Attack(co.RoundMetrics(res.nominal_return, res.worst_return), pts,
                         np.array([c["return"] for c in cases]), np.zeros(len(cases), int))  # fmt: skip

    def train_round(k, bank, key):
        pts = np.asarray(bank.params)[np.asarray(bank.valid)]
        theta = jnp.asarray(np.concatenate([space.center[None], pts]), jnp.float32)
        grad = jax.grad(lambda k: returns(theta, k).mean())
        for _ in range(50):
            k = k + 0.05 * grad(k)
        return k

    k0 = 0.4  # pole 0.8 at the nominal model, 1.06 (unstable) at a = 1.1, b = 0.3
    state, bank, history = co.run(
        jnp.asarray(k0), train_round=train_round, attack=attack, key=jax.random.PRNGKey(1),
        dim=2, scale=space.scale, capacity=8, min_distance=0.05, max_rounds=3, patience=2,
        min_improvement=0.0, nominal_budget=1.0,
    )  # fmt: skip
    assert history[1]["accepted"]
    assert history[1]["worst"] > history[0]["worst"]
    assert history[1]["nominal"] >= history[0]["nominal"] - 1.0
    assert co.bank_size(bank) <= 8


# ---------------------------------------------------------------------------------------------
# Resume and skip (issue 22)
# ---------------------------------------------------------------------------------------------


def _fake_loop(workdir, stream, fail_at=None, calls=None):
    """co.checkpointed_run on a fake metric stream; the state is an f32 counter. ``fail_at``
    raises inside that round's training (an interrupted run)."""
    calls = [] if calls is None else calls
    round_keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), 4))

    def train_round(state, bank, key):
        # round r gets the r-th key whether or not the loop was resumed: the candidate is r
        r = 1 + int(np.flatnonzero((round_keys == np.asarray(key)).all(-1))[0])
        if fail_at is not None and r >= fail_at:
            raise KeyboardInterrupt("interrupted")
        calls.append(r)
        return jnp.float32(r)

    def attack(state, bank):
        nominal, worst = stream[int(state)]
        return co.Attack(co.RoundMetrics(nominal, worst), np.array([[float(state), 0.0]]),
                         np.array([worst]), np.array([int(state)]))  # fmt: skip

    out = co.checkpointed_run(
        str(workdir), lambda: jnp.float32(0.0), jax.ShapeDtypeStruct((), jnp.float32),
        train_round=train_round, attack=attack, key=jax.random.PRNGKey(0), dim=2,
        scale=np.ones(2), capacity=4, min_distance=0.5, max_rounds=4, patience=3,
        min_improvement=1.0, nominal_budget=3.0,
    )  # fmt: skip
    return out, calls


STREAM = {0: (100.0, 10.0), 1: (99.0, 20.0), 2: (90.0, 40.0), 3: (99.0, 25.0), 4: (99.0, 30.0)}


def test_checkpointed_loop_resumes_after_interrupt_and_skips_finished(tmp_path):
    (ref_state, ref_bank, ref_hist), ref_calls = _fake_loop(tmp_path / "ref", STREAM)
    assert [h["accepted"] for h in ref_hist] == [True, True, False, True, True]

    with pytest.raises(KeyboardInterrupt):
        _fake_loop(tmp_path / "run", STREAM, fail_at=3)  # rounds 1, 2 finish
    (state, bank, hist), calls = _fake_loop(tmp_path / "run", STREAM)
    assert calls == [3, 4]  # only the unfinished rounds ran again
    assert hist == ref_hist
    assert float(state) == float(ref_state)
    for a, b in zip(bank, ref_bank, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    (_, _, again), calls = _fake_loop(tmp_path / "run", STREAM)
    assert calls == [] and again == ref_hist  # finished: nothing is recomputed
    lines = (tmp_path / "run" / co.ROUNDS_FILE).read_text().splitlines()
    assert len(lines) == len(ref_hist)


def test_config_errors_name_the_full_field_path():
    from experiments.configs import coevolve as cfgs

    cfg = cfgs.get_config("smoke")
    cfg.train.algo = "nope"
    with pytest.raises(co.harness.ConfigError, match=r"config\.train\.algo='nope'"):
        co.validate_config(cfg)
    cfg = cfgs.get_config("smoke")
    cfg.windtunnel.ball = "nope"
    with pytest.raises(co.harness.ConfigError, match=r"config\.windtunnel\.ball"):
        co.validate_config(cfg)
    cfg = cfgs.get_config("smoke")
    cfg.shield.enabled = True
    cfg.shield.constraint = "nope"
    with pytest.raises(co.harness.ConfigError, match=r"config\.shield\.constraint='nope'"):
        co.validate_config(cfg)
    cfg.shield.constraint, cfg.shield.num_candidates = "pendulum", 1
    with pytest.raises(co.harness.ConfigError, match=r"config\.shield\.num_candidates"):
        co.validate_config(cfg)


# ---------------------------------------------------------------------------------------------
# Shielded training in the loop
# ---------------------------------------------------------------------------------------------


class _Spec:
    nominal = np.array([1.0, 2.0], np.float32)


def test_verifier_models_are_nominal_then_worst_bank_entries():
    bank = co.bank_init(4, 2)
    params = np.array([[5.0, 5.0], [3.0, 3.0], [9.0, 9.0]])
    bank = co.bank_insert_many(bank, params, [1.0, 7.0, 4.0], [0, 0, 0],
                               scale=jnp.ones(2), min_distance=0.1)  # fmt: skip
    got = co.verifier_models(_Spec, bank, 2)
    np.testing.assert_array_equal(got, [[1.0, 2.0], [3.0, 3.0], [9.0, 9.0]])  # by severity
    # fewer failures than asked: the rest repeat the nominal model
    got = co.verifier_models(_Spec, co.bank_init(4, 2), 2)
    np.testing.assert_array_equal(got, np.tile(_Spec.nominal, (3, 1)))


def test_shield_filter_is_identity_when_disabled():
    from experiments.configs import coevolve as cfgs

    cfg = cfgs.get_config("smoke")
    assert co.shield_filter(cfg, None, _Spec, co.bank_init(2, 2)) is co.acting.identity_filter


@pytest.mark.slow
def test_coevolve_smoke_trains_shielded(tmp_path, capsys):
    """MJX pendulum, PPO with the shield in the acting loop (verifier: nominal + bank's worst)."""
    from experiments.configs import coevolve as cfgs

    cfg = cfgs.get_config("smoke")
    cfg.shield.enabled = True
    cfg.max_rounds = 1
    out = co.train_and_coevolve(cfg, str(tmp_path))
    assert len(out["history"]) == 2
    rates = [line for line in capsys.readouterr().out.splitlines() if "shield call rate" in line]
    assert len(rates) == cfg.pretrain_updates + cfg.round_updates
    assert all("call rate 1.000" in line for line in rates)  # tau = 0: verify every step
