"""One process of a two-process :func:`harness.run_experiment` (issue 23), for
tests/harness/test_multiprocess_run.py.

``python multiprocess_run_script.py WORKDIR PORT PID SCALE [STOP_AFTER]``: joins a loopback
coordinator as process PID of 2 (one CPU device each, gloo collectives) and runs 4 updates of
``w <- SCALE * w + 1`` on a length-4 vector sharded over both processes, logging ``sum(w)``;
``STOP_AFTER`` stops it as if killed. A refused workdir exits with status 2 and one line.
"""

from __future__ import annotations

import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

import harness  # noqa: E402
from harness import parallel  # noqa: E402


def main(workdir: str, port: str, pid: int, scale: float, stop_after: int | None) -> None:
    config = ml_collections.ConfigDict({"scale": scale, "parallel": parallel.default_config()})
    config.parallel.coordinator_address = f"127.0.0.1:{port}"
    config.parallel.num_processes = 2
    config.parallel.process_id = pid
    parallel.initialize(config)
    assert jax.process_count() == 2 and jax.device_count() == 2
    sharding = NamedSharding(jax.make_mesh((2,), ("data",)), PartitionSpec("data"))

    @jax.jit
    def update(state):
        w = scale * state["w"] + 1.0
        return {"w": w}, {"train/sum": jnp.sum(w)}

    init = jax.jit(lambda key: {"w": jnp.zeros(4)}, out_shardings={"w": sharding})
    try:
        harness.claim_workdir(config, workdir)
        harness.run_experiment(
            config, workdir, init=init, update=update, num_updates=4, seed=0,
            checkpoint_every=1, stop_after=stop_after, progress=False, plots={"sum.png": ["train/sum"]},
        )  # fmt: skip
    except harness.ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"OK process {pid}")


if __name__ == "__main__":
    stop = int(sys.argv[5]) if len(sys.argv) > 5 else None
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), stop)
