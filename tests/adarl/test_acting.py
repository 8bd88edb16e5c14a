"""adarl.acting: the step bookkeeping shared by SAC, PPO/RNAC and the wind tunnel."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adarl import acting


class _State(NamedTuple):
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    info: dict[str, Any]


def test_outcome_reads_final_obs_and_separates_timeouts_from_terminals():
    obs = jnp.asarray([[0.0], [1.0], [2.0]])  # already the next episode's first obs where done
    final = jnp.asarray([[5.0], [6.0], [7.0]])
    info = {"truncation": jnp.asarray([0.0, 1.0, 0.0]), "final_obs": final}
    st = _State(obs, jnp.asarray([1.0, 2.0, 3.0]), jnp.asarray([0, 1, 1]), info)
    out = acting.outcome(st)
    np.testing.assert_array_equal(out.done, [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(out.terminal, [0.0, 0.0, 1.0])  # row 1 is a time-out
    np.testing.assert_array_equal(out.next_obs, final)
    assert out.bootstrap_timeouts
    # Without final_obs (brax-style wrappers) the reached state is lost: obs is all there is.
    brax = acting.outcome(st._replace(info={"truncation": info["truncation"]}))
    np.testing.assert_array_equal(brax.next_obs, obs)
    assert not brax.bootstrap_timeouts


def test_track_returns_closes_finished_episodes():
    r = acting.returns_init(3)
    r, n = acting.track_returns(r, jnp.asarray([1.0, 2.0, 3.0]), jnp.asarray([0.0, 0.0, 0.0]))
    assert float(n) == 0 and float(r.last) == 0.0
    r, n = acting.track_returns(r, jnp.asarray([1.0, 1.0, 1.0]), jnp.asarray([1.0, 0.0, 1.0]))
    assert float(n) == 2
    np.testing.assert_allclose(r.last, (2.0 + 4.0) / 2)  # mean of the two finished returns
    np.testing.assert_allclose(r.running, [0.0, 3.0, 0.0])  # finished slots restart at 0
    r, n = acting.track_returns(r, jnp.asarray([1.0, 1.0, 1.0]), jnp.zeros(3))
    np.testing.assert_allclose(r.last, 3.0)  # kept until another episode finishes


def test_env_packer_drops_and_rebuilds_zero_size_leaves():
    class _Env:
        def reset(self, keys):
            n = keys.shape[0]
            return {"obs": jnp.ones((n, 2)), "act": jnp.zeros((n, 0))}

    packer = acting.EnvPacker.for_env(_Env(), 4)
    state = _Env().reset(jnp.zeros((4, 2), jnp.uint32))
    packed = packer.pack(state)
    assert packed["act"] is None
    back = packer.unpack(packed)
    assert back["act"].shape == (4, 0)
    np.testing.assert_array_equal(back["obs"], state["obs"])


def test_episode_returns_mask_rewards_after_the_first_done():
    class _Env:
        def reset(self, keys):
            n = keys.shape[0]
            return _State(jnp.zeros((n, 1)), jnp.zeros(n), jnp.zeros(n), {"t": jnp.zeros(n)})

        def step(self, st, actions):
            t = st.info["t"] + 1
            done = (t == 2).astype(jnp.float32)  # every episode ends after 2 steps
            return _State(st.obs, jnp.ones_like(t) + actions[:, 0], done, {"t": t * (1 - done)})

    ret = acting.episode_returns(
        _Env(), lambda obs: jnp.ones((obs.shape[0], 1)), jnp.zeros((3, 2)), None, 5
    )
    np.testing.assert_allclose(ret, [4.0, 4.0, 4.0])  # 2 steps of reward 2, then masked
