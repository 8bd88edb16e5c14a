"""Next sweep proposed by experiments.hypotheses (widest relative CI x novelty among the top 5: h3fe8fe62).

    python -m experiments.adarl --config results/hypotheses/adarl_next_sweep.py:<cell> --workdir DIR
cells: cell0_seed1, cell0_seed2, cell0_seed3, cell1_seed1, cell1_seed2, cell1_seed3
"""

import importlib
import json

# cell name -> [experiment module, preset, {dotted field: value}]
CELLS = json.loads(
    """
{
 "cell0_seed1": [
  "adarl",
  "cpu_robust_sac",
  {
   "network.low_rank": false,
   "network.normalize_observations": false,
   "sac.warmup_steps": 0,
   "algo": "sac",
   "seed": 1
  }
 ],
 "cell0_seed2": [
  "adarl",
  "cpu_robust_sac",
  {
   "network.low_rank": false,
   "network.normalize_observations": false,
   "sac.warmup_steps": 0,
   "algo": "sac",
   "seed": 2
  }
 ],
 "cell0_seed3": [
  "adarl",
  "cpu_robust_sac",
  {
   "network.low_rank": false,
   "network.normalize_observations": false,
   "sac.warmup_steps": 0,
   "algo": "sac",
   "seed": 3
  }
 ],
 "cell1_seed1": [
  "adarl",
  "cpu_robust_rank3",
  {
   "algo": "sac_factorised",
   "seed": 1
  }
 ],
 "cell1_seed2": [
  "adarl",
  "cpu_robust_rank3",
  {
   "algo": "sac_factorised",
   "seed": 2
  }
 ],
 "cell1_seed3": [
  "adarl",
  "cpu_robust_rank3",
  {
   "algo": "sac_factorised",
   "seed": 3
  }
 ]
}
"""
)


def get_config(cell):
    module, preset, overrides = CELLS[cell]
    c = importlib.import_module("experiments.configs." + module).get_config(preset)
    for dotted, value in overrides.items():
        *path, leaf = dotted.split(".")
        node = c
        for part in path:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"config field {dotted!r} does not exist in {module}:{preset}")
        node[leaf] = tuple(value) if isinstance(node[leaf], tuple) else value
    return c
