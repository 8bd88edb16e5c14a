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
    assert on_disk["device_kinds"] == sorted({d.device_kind for d in jax.devices()})
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


# --- A workdir holds one run (issue 22) -----------------------------------------------------


def _run_cfg(workdir, config, **kw):
    init, update = _toy()
    return harness.run_experiment(
        config,
        str(workdir),
        init=init,
        update=update,
        num_updates=4,
        seed=0,
        checkpoint_every=2,
        progress=False,
        **kw,
    )


def test_changed_config_is_refused_before_anything_is_written(tmp_path):
    _run_cfg(tmp_path, _config())
    before = {p: os.path.getmtime(tmp_path / p) for p in os.listdir(tmp_path)}
    with pytest.raises(harness.WorkdirError, match=r"1 field: lr: 0.1 -> 0.2\).*--overwrite"):
        _run_cfg(tmp_path, _config(lr=0.2))
    assert {p: os.path.getmtime(tmp_path / p) for p in os.listdir(tmp_path)} == before
    # --overwrite moves the old run aside, never deletes it.
    summary = _run_cfg(tmp_path, _config(lr=0.2), overwrite=True)
    assert summary["final_step"] == 4
    old = str(tmp_path) + ".old-1"
    assert json.load(open(os.path.join(old, "config.json")))["lr"] == 0.1
    assert json.load(open(tmp_path / "config.json"))["lr"] == 0.2


def test_another_experiments_run_or_foreign_files_are_refused_untouched(tmp_path):
    _run_cfg(tmp_path / "a", _config())
    other = ml_collections.ConfigDict({"model": {"layer": "mamba"}, "seed": 0})
    saved = open(tmp_path / "a" / "config.json").read()
    with pytest.raises(harness.WorkdirError, match="another experiment's run"):
        harness.claim_workdir(other, str(tmp_path / "a"), overwrite=True)
    assert open(tmp_path / "a" / "config.json").read() == saved
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(harness.WorkdirError, match="not empty and holds no run"):
        _run_cfg(tmp_path / "b", _config())
    assert os.listdir(tmp_path / "b") == ["notes.txt"]
    (tmp_path / "c").write_text("a file")
    with pytest.raises(harness.WorkdirError, match="is not a directory"):
        _run_cfg(tmp_path / "c", _config())


def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    full = _run(tmp_path / "full")
    _run(tmp_path / "run", stop_after=5)  # checkpoints at 2 and 4
    latest = tmp_path / "run" / "checkpoints" / "4"
    for root, _, files in os.walk(latest):
        for name in files:
            open(os.path.join(root, name), "w").close()  # every file emptied
    resumed = _run(tmp_path / "run")
    err = capsys.readouterr().err
    assert f"checkpoint {latest} is unreadable" in err
    assert resumed["resumed_from"] == 2
    rows = harness.read_metrics(str(tmp_path / "run"))
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert resumed["final_metrics"]["loss"] == pytest.approx(full["final_metrics"]["loss"])


def test_no_readable_checkpoint_is_one_line_error(tmp_path):
    _run(tmp_path, stop_after=3)  # checkpoint at 2 only
    step_dir = tmp_path / "checkpoints" / "2"
    for root, _, files in os.walk(step_dir):
        for name in files:
            open(os.path.join(root, name), "w").close()
    with pytest.raises(harness.CheckpointError, match="no readable checkpoint") as err:
        _run(tmp_path)
    assert "\n" not in str(err.value)


def test_kill_before_first_checkpoint_restarts_clean_and_step_logs_are_cut(tmp_path):
    _run(tmp_path, stop_after=1)  # first checkpoint would be at 2
    with open(tmp_path / "spectra.jsonl", "w") as f:
        f.write(json.dumps({"step": 1, "sv": [1.0]}) + "\n")
    summary = _run(tmp_path)
    assert summary["resumed_from"] == 0
    assert [r["step"] for r in harness.read_metrics(str(tmp_path))] == list(range(1, 7))
    assert open(tmp_path / "spectra.jsonl").read() == ""  # its row came from the lost run
    assert len(os.listdir(tmp_path / "tb")) == 1  # TensorBoard rebuilt, not appended to


def test_summary_records_the_code_and_plots_are_labelled(tmp_path, monkeypatch):
    assert set(_run(tmp_path / "real")["git"]) == {"commit", "dirty"}
    # A commit made while the run trains is not the code it runs: read at the start.
    init, update = _toy()
    trained = []

    def update_and_mark(state):
        trained.append(True)
        return update(state)

    def fake_git_info():
        return {"commit": "later" if trained else "at-start", "dirty": False}

    monkeypatch.setattr(harness.run, "git_info", fake_git_info)
    summary = harness.run_experiment(
        _config(), str(tmp_path / "fake"), init=init, update=update_and_mark, num_updates=2,
        seed=0, checkpoint_every=2, progress=False,
    )  # fmt: skip
    assert trained and summary["git"]["commit"] == "at-start"
    assert summary["num_seeds"] == 2  # the per-seed metric has two entries
    plot = harness.plots.as_plot(["loss", "per_seed"], "train_loss.png")
    assert plot.title == "train loss" and plot.ylabel == "train loss"
    assert harness.plots.as_plot(["loss"], "x.png").ylabel == "loss"
