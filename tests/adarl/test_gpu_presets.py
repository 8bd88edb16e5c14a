"""Paper presets on one GPU: donated updates, checkpoints without replay, the memory check,
and every paper preset traced (issue 14)."""

import json
import os

import jax
import numpy as np
import pytest

import harness
from adarl import footprint
from adarl import train as train_lib
from experiments.configs import adarl as configs
from tests.adarl.test_sac import probe_config, probe_envs


@pytest.fixture(scope="module")
def probe_seeded():
    config = probe_config(num_updates=4, checkpoint_every=1, eval_every=2, replay_size=20_000)
    config.num_seeds = 2
    fns = train_lib.make_train_fns(config, probe_envs())
    return config, fns, train_lib.make_seeded(fns, 2)


def test_update_donates_its_state_so_the_replay_is_not_copied(probe_seeded):
    """The compiled update aliases its whole input (replay included) to its output, and the
    replay passed in is deleted. Kills: donate_argnums dropped from make_seeded."""
    _, _, seeded = probe_seeded
    state = seeded.init(jax.random.PRNGKey(0))
    replay_bytes = footprint.tree_bytes(state.buffer)
    stats = seeded.update.lower(state).compile().memory_analysis()
    assert stats.alias_size_in_bytes >= replay_bytes > 1_000_000
    data = state.buffer.data.obs
    new, _ = seeded.update(state)
    assert data.is_deleted() and not new.buffer.data.obs.is_deleted()


def test_memory_estimate_counts_replay_exactly_and_bounds_xla(probe_seeded):
    """The replay term equals the bytes init allocates; the estimate (without the runtime
    reserve) covers XLA's own accounting of the compiled update and is within 2x of it.
    Kills: a wrong transition size or seed count, the replay counted twice or not at all."""
    config, fns, seeded = probe_seeded
    config = train_lib.resolve_config(config)
    fp = train_lib.check_memory(config, fns, verbose=False)
    state = jax.eval_shape(seeded.init, jax.random.PRNGKey(0))
    assert fp.replay == footprint.tree_bytes(state.buffer.data)
    stats = seeded.update.lower(state).compile().memory_analysis()
    xla = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
    )
    assert xla <= fp.total - fp.reserve <= 2 * xla, (xla, fp)


def test_config_that_cannot_fit_is_refused_before_anything_runs(tmp_path):
    config = probe_config(replay_size=20_000_000)
    config.train.device_memory_gb = 1.0
    with pytest.raises(harness.ConfigError, match=r"config\.train\.replay_size.*config\.num_seeds"):
        train_lib.train_and_evaluate(config, str(tmp_path), fns=_fns(config))
    assert not os.path.exists(tmp_path / "config.json")


def _fns(config):
    return train_lib.make_train_fns(config, probe_envs())


def _saved_leaves(workdir: str, step: int) -> list[str]:
    """The array paths orbax saved at ``step`` (its tree metadata; None leaves are not arrays)."""
    path = os.path.join(workdir, "checkpoints", str(step), "default", "_METADATA")
    tree = json.load(open(path))["tree_metadata"]
    return [k for k, v in tree.items() if v["value_metadata"].get("value_type") != "None"]


def test_resume_without_replay_refills_it_with_the_policy(tmp_path, probe_seeded):
    """Default checkpoints hold no replay array; a resumed run refills ``prefill_steps``
    transitions, then finishes every update.
    Kills: the buffer saved anyway; the refill skipped (env steps would not grow by 64)."""
    config, fns, _ = probe_seeded
    part = str(tmp_path / "part")
    s_int = train_lib.train_and_evaluate(config, part, fns=fns, stop_after=2, progress=False)
    assert s_int["interrupted"]
    saved = _saved_leaves(part, 2)
    assert any(k.startswith("('agent',") for k in saved)
    assert not any(k.startswith("('buffer',") for k in saved), saved
    s_res = train_lib.train_and_evaluate(config, part, fns=fns, progress=False)
    assert s_res["resumed_from"] == 2
    rows = [json.loads(line) for line in open(os.path.join(part, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    t = config.train
    uninterrupted = t.prefill_steps + t.num_updates * t.steps_per_update * t.num_envs
    assert rows[-1]["train/env_steps"] == uninterrupted + t.prefill_steps
    assert all(r["perf/update_s"] > 0 for r in rows)
    assert np.isfinite(s_res["final_metrics"]["eval/return"])
    tp = footprint.throughput(part)
    assert tp["grad_steps_per_s"] == pytest.approx(
        2 * t.steps_per_update * t.grad_updates_per_step / tp["median_update_s"]
    )


def test_refill_acts_with_the_policy_and_prefill_uniformly(probe_seeded):
    """An actor pinned at tanh(5) ~ 1 fills the resumed replay with actions near 1; the fresh
    prefill draws them uniformly from [-1, 1]. Kills: the refill done with random actions."""
    config, _, seeded = probe_seeded
    state = seeded.start(jax.random.PRNGKey(0))
    out = state.agent.actor_params["params"]["mlp"]["output"]
    pinned = {"kernel": out["kernel"] * 0, "bias": out["bias"].at[:, 0].set(5.0).at[:, 1].set(-9)}
    params = {"params": {**state.agent.actor_params["params"]}}
    params["params"]["mlp"] = {**params["params"]["mlp"], "output": pinned}
    state = state.replace(agent=state.agent.replace(actor_params=params))
    n = config.train.prefill_steps
    refilled = np.asarray(seeded.refill(state).buffer.data.action)[:, :n]
    prefilled = np.asarray(seeded.prefill(state).buffer.data.action)[:, :n]
    assert refilled.min() > 0.99
    assert abs(prefilled.mean()) < 0.2 and prefilled.min() < -0.5


# ---------------------------------------------------------------------------------------------
# The paper presets (MJX tasks; building each takes seconds on a CPU)
# ---------------------------------------------------------------------------------------------

GPU_PRESETS = (*configs.PAPER_PRESETS, "gpu_smoke")
H100_BUDGET_GB = 60.0  # 75% (JAX's default preallocation) of an 80 GB GPU, the smallest target


class _Presets(dict):
    """Resolved config and train fns per preset, built on first use (MJX models take seconds)."""

    def __missing__(self, name):
        config = train_lib.resolve_config(configs.get_config(name))
        config.train.device_memory_gb = H100_BUDGET_GB
        self[name] = (config, train_lib.make_train_fns(config))
        return self[name]


@pytest.fixture(scope="module")
def preset_fns():
    return _Presets()


# hopper's check runs by default; the others (about 10 s each on a shared CPU) are slow.
@pytest.mark.parametrize(
    "name", [n if n == "hopper" else pytest.param(n, marks=pytest.mark.slow) for n in GPU_PRESETS]
)
def test_paper_preset_keeps_the_update_ratio_and_fits_an_80gb_gpu(name, preset_fns):
    config, fns = preset_fns[name]
    t = config.train
    assert t.num_envs >= 64 and t.grad_updates_per_step == t.num_envs  # 1 grad step / env step
    assert not t.checkpoint_replay
    fp = train_lib.check_memory(config, fns, verbose=False)
    assert fp.total <= H100_BUDGET_GB * footprint.GIB
    o, a = fns.envs.observation_size, fns.envs.action_size
    assert fp.replay == config.num_seeds * t.replay_size * (2 * o + a + 3) * 4


@pytest.mark.slow
def test_gpu_smoke_update_traces(preset_fns):
    config, fns = preset_fns["gpu_smoke"]
    seeded = train_lib.make_seeded(fns, config.num_seeds)
    state = jax.eval_shape(seeded.init, jax.random.PRNGKey(0))
    _, metrics = jax.eval_shape(seeded.update, state)
    assert metrics["train/return"].shape == (config.num_seeds,)


@pytest.mark.slow
@pytest.mark.parametrize("name", configs.PAPER_PRESETS)
def test_paper_preset_traces_init_update_eval(name, preset_fns):
    """jax.eval_shape of the seeded init, update and evaluation (about 25 s each on a CPU)."""
    config, fns = preset_fns[name]
    seeded = train_lib.make_seeded(fns, config.num_seeds)
    state = jax.eval_shape(seeded.init, jax.random.PRNGKey(0))
    assert state.buffer.data.obs.shape == (
        config.num_seeds,
        config.train.replay_size,
        fns.envs.observation_size,
    )
    new, metrics = jax.eval_shape(seeded.update, state)
    assert jax.tree.structure(new) == jax.tree.structure(state)
    returns = jax.eval_shape(seeded.evaluate, state.agent, jax.random.PRNGKey(1))
    assert returns.shape == (config.num_seeds, config.eval.num_episodes)
    assert "rank/actor_0" in metrics


# ---------------------------------------------------------------------------------------------
# cpu_robust and its arms (config only: nothing is built)
# ---------------------------------------------------------------------------------------------

ROBUST_ARMS = {
    "cpu_robust": ("adarl", True, 64),
    "cpu_robust_sac": ("sac", False, 64),
    "cpu_robust_sac_factorised": ("sac_factorised", True, 64),
    "cpu_robust_rank3": ("sac_factorised", True, 3),
    "cpu_robust_rank8": ("sac_factorised", True, 8),
}


REACHER_ARMS = {
    "cpu_robust_reacher": ("adarl", True, 64),
    "cpu_robust_reacher_sac": ("sac", False, 64),
    "cpu_robust_reacher_sac_factorised": ("sac_factorised", True, 64),
    "cpu_robust_reacher_rank5": ("sac_factorised", True, 5),
    "cpu_robust_reacher_rank10": ("sac_factorised", True, 10),
}


def test_cpu_robust_reacher_arms_share_the_task_and_schedule():
    """The second task's arms: ReacherEasy with 3 perturbed parameters, the oracle at 2·d_a + 1,
    the same budget and truncation schedule as cpu_robust."""
    resolved = {n: train_lib.resolve_config(configs.get_config(n)) for n in REACHER_ARMS}
    base = resolved["cpu_robust_reacher"]
    for name, (algo, low_rank, rank) in REACHER_ARMS.items():
        c = resolved[name]
        train_lib.validate(c)
        assert (c.algo, c.network.low_rank, c.lowrank.init_rank) == (algo, low_rank, rank)
        assert c.env.name == "ReacherEasy" and len(c.dynamics.params) == 3
        for section in ("env", "dynamics", "train", "eval"):
            assert c[section].to_dict() == base[section].to_dict(), (name, section)
    cart = train_lib.resolve_config(configs.get_config("cpu_robust"))
    assert base.train.to_dict() == cart.train.to_dict()
    assert base.lowrank.interval == cart.lowrank.interval


def test_cpu_robust_arms_differ_only_in_the_upper_level():
    """Every arm validates; AdaRL truncates 9 times, each followed by >= 10k gradient steps;
    the arms share everything but algo, dense/factorised and the (fixed) rank."""
    resolved = {n: train_lib.resolve_config(configs.get_config(n)) for n in ROBUST_ARMS}
    for name, (algo, low_rank, rank) in ROBUST_ARMS.items():
        c = resolved[name]
        train_lib.validate(c)
        assert (c.algo, c.network.low_rank, c.lowrank.init_rank) == (algo, low_rank, rank)
        assert c.num_seeds == 5 and c.env.name == "CartpoleSwingup" and c.env.action_repeat == 8
        assert c.sac.lr_schedule == "constant"
    c = resolved["cpu_robust"]
    total = c.train.num_updates * c.train.steps_per_update * c.train.grad_updates_per_step
    assert total == 100_000 and total // c.lowrank.interval - 1 == 9
    assert "gear:slide" in c.dynamics.params and min(c.eval.grid_scales) == 0.25
    assert max(c.eval.grid_scales) == 4.0 and c.sac.warmup_steps > 0
    shared = {"env", "dynamics", "train", "eval"}
    for name in ROBUST_ARMS:
        for section in shared:
            assert resolved[name][section].to_dict() == c[section].to_dict(), (name, section)
