"""Next sweep proposed by experiments.hypotheses (widest relative CI x novelty among the top 5: hbd11c803).

    python -m experiments.ssm --config results/hypotheses/ssm_next_sweep.py:<cell> --workdir DIR
cells: cell0_seed5, cell0_seed6, cell0_seed7, cell1_seed5, cell1_seed6, cell1_seed7
"""

import importlib
import json

# cell name -> [experiment module, preset, {dotted field: value}]
CELLS = json.loads(
    """
{
 "cell0_seed5": [
  "ssm",
  "induction_l256",
  {
   "progress": false,
   "model.layer": "mamba",
   "seed": 5
  }
 ],
 "cell0_seed6": [
  "ssm",
  "induction_l256",
  {
   "progress": false,
   "model.layer": "mamba",
   "seed": 6
  }
 ],
 "cell0_seed7": [
  "ssm",
  "induction_l256",
  {
   "progress": false,
   "model.layer": "mamba",
   "seed": 7
  }
 ],
 "cell1_seed5": [
  "ssm",
  "ind256_transformer",
  {
   "progress": false,
   "train.lr": 0.001,
   "model.layer": "transformer",
   "seed": 5
  }
 ],
 "cell1_seed6": [
  "ssm",
  "ind256_transformer",
  {
   "progress": false,
   "train.lr": 0.001,
   "model.layer": "transformer",
   "seed": 6
  }
 ],
 "cell1_seed7": [
  "ssm",
  "ind256_transformer",
  {
   "progress": false,
   "train.lr": 0.001,
   "model.layer": "transformer",
   "seed": 7
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
