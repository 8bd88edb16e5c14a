"""The policies of any run directory, by the ``algo`` of its ``config.json``.

The top of adarl: this module imports every trainer (:mod:`adarl.train`, :mod:`adarl.rnac`) and
nothing below imports it. The loader registry is derived from the trainers' algorithm registries
(``adarl.train.ALGOS``, ``adarl.rnac.ALGOS``), so a new algorithm needs no second entry here.
"""

from __future__ import annotations

from collections.abc import Callable

import harness
from adarl import checkpoints, rnac, train
from adarl.robust_eval import RunPolicies


def _load_sac(workdir: str) -> RunPolicies:
    # load_agents gives the parameters so that they are traced arguments (a closure over them,
    # as load_policy's, would make every seed recompile the MJX rollout; issue 6).
    agents, fns, config = train.load_agents(workdir)
    return RunPolicies(agents, fns.policy, config, int(config.num_seeds))


LOADERS: harness.Registry[Callable[[str], RunPolicies]] = harness.Registry("policy loader")
for _name in train.ALGOS:
    LOADERS.add(_name, _load_sac)
for _name in rnac.ALGOS:
    LOADERS.add(_name, rnac.load_policies)


def load_run(workdir: str) -> RunPolicies:
    """The per-seed policies of any run, by the ``algo`` of its ``config.json`` (registry)."""
    algo = checkpoints.read_config(workdir).get("algo")
    if algo not in LOADERS:
        raise ValueError(f"no policy loader for algo={algo!r}; registered: {list(LOADERS)}")
    return LOADERS.get(algo)(workdir)
