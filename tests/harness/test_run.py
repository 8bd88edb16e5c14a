"""Harness tests: config errors, output files, NaN stop, checkpoint-then-resume."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import harness


def _config(**kw):
    c = ml_collections.ConfigDict(
        {"algo": "sgd", "lr": 0.1, "num_updates": 6, "nested": {"width": 4}}
    )
    c.update(kw)
    return c


def _toy(lr=0.1, poison_at=None):
    """Noisy linear regression trained by SGD; the key in the state makes each step random."""
    w_true = jnp.arange(1.0, 4.0)
    opt = optax.sgd(lr)

    def init(key):
        params = jnp.zeros(3)
        return {
            "params": params,
            "opt": opt.init(params),
            "key": key,
            "t": jnp.zeros((), jnp.int32),
        }

    @jax.jit
    def update(state):
        key, k = jax.random.split(state["key"])
        x = jax.random.normal(k, (32, 3))
        y = x @ w_true

        def loss_fn(p):
            return jnp.mean((x @ p - y) ** 2)

        loss, g = jax.value_and_grad(loss_fn)(state["params"])
        upd, opt_state = opt.update(g, state["opt"])
        t = state["t"] + 1
        if poison_at is not None:
            loss = jnp.where(t == poison_at, jnp.nan, loss)
        new = {
            "params": optax.apply_updates(state["params"], upd),
            "opt": opt_state,
            "key": key,
            "t": t,
        }
        return new, {"loss": loss, "per_seed": jnp.stack([loss, 2 * loss])}

    return init, update


def _run(workdir, num_updates=6, **kw):
    init, update = _toy(poison_at=kw.pop("poison_at", None))
    return harness.run_experiment(
        _config(),
        str(workdir),
        init=init,
        update=update,
        num_updates=num_updates,
        seed=0,
        checkpoint_every=2,
        keep_checkpoints=2,
        evaluate=lambda s: {"eval/w0": s["params"][0]},
        eval_every=3,
        plots={"loss.png": ["loss", "per_seed"]},
        progress=False,
        **kw,
    )


def test_config_checks_name_field_and_allowed_values():
    c = _config()
    assert harness.check_choice(c, "algo", ("sgd", "adam")) == "sgd"
    with pytest.raises(harness.ConfigError, match=r"config.algo='sgd'.*'adam', 'lion'"):
        harness.check_choice(c, "algo", ("adam", "lion"))
    with pytest.raises(harness.ConfigError, match=r"config.lr=0.1 is out of range.*\(0.5, inf\]"):
        harness.check_range(c, "lr", lo=0.5, lo_inclusive=False)
    with pytest.raises(harness.ConfigError, match="config.nested.width=4 is out of range"):
        harness.check_int(c, "nested.width", lo=8)
    with pytest.raises(harness.ConfigError, match="must be an integer"):
        harness.check_int(c, "lr", lo=0)
    with pytest.raises(harness.ConfigError, match="'nested.depth' is missing"):
        harness.check_int(c, "nested.depth")
    presets = {"smoke": _config, "cpu": _config}
    assert harness.select_preset(presets, "cpu").algo == "sgd"
    with pytest.raises(harness.ConfigError, match="unknown preset 'gpu'; choose one of cpu, smoke"):
        harness.select_preset(presets, "gpu")


def test_outputs_written(tmp_path):
    summary = _run(tmp_path)
    records = harness.read_metrics(str(tmp_path))
    assert [r["step"] for r in records] == list(range(1, 7))
    assert "eval/w0" in records[2] and "eval/w0" not in records[1]
    assert records[0]["per_seed/std"] > 0
    assert json.load(open(tmp_path / "config.json"))["algo"] == "sgd"
    on_disk = json.load(open(tmp_path / "summary.json"))
    assert on_disk["final_step"] == 6 and on_disk["jax_version"] == jax.__version__
    assert summary["final_metrics"]["loss"] == pytest.approx(records[-1]["loss"])
    assert os.path.exists(tmp_path / "loss.png")
    assert any(f.startswith("events") for f in os.listdir(tmp_path / "tb"))
    steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    assert steps == [4, 6]  # kept the last two
    # A finished run is not redone.
    again = _run(tmp_path)
    assert again == on_disk
    assert len(harness.read_metrics(str(tmp_path))) == 6


def test_resume_continues_with_same_result(tmp_path):
    full = _run(tmp_path / "full")
    interrupted = _run(tmp_path / "resumed", stop_after=5)  # checkpoint at 4, killed after 5
    assert interrupted["interrupted"]
    resumed = _run(tmp_path / "resumed")
    assert resumed["resumed_from"] == 4
    a = harness.read_metrics(str(tmp_path / "full"))
    b = harness.read_metrics(str(tmp_path / "resumed"))
    assert [r["step"] for r in b] == list(range(1, 7))  # step 5 logged once, not twice
    for ra, rb in zip(a, b, strict=True):
        assert ra == pytest.approx(rb, rel=1e-6)
    init, _ = _toy()
    state, step = harness.load_state(str(tmp_path / "resumed"), like=init(jax.random.PRNGKey(0)))
    state_full, _ = harness.load_state(str(tmp_path / "full"), like=init(jax.random.PRNGKey(0)))
    assert step == 6
    np.testing.assert_allclose(state["params"], state_full["params"], rtol=1e-6)
    assert full["final_metrics"]["loss"] == pytest.approx(resumed["final_metrics"]["loss"])


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(harness.NonFiniteError, match="update step 5: metric 'loss' is nan"):
        _run(tmp_path, poison_at=5)
    steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    assert steps == [2, 4]
    assert not os.path.exists(tmp_path / "summary.json")
    init, _ = _toy()
    state, step = harness.load_state(str(tmp_path), like=init(jax.random.PRNGKey(0)))
    assert step == 4 and int(state["t"]) == 4
