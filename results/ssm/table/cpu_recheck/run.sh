# CPU rerun at HEAD of the first 200 steps (2 updates) of the H200 selective-copying rows, seed 0 (README "The synthetic tasks over seeds"). From the repository root.
for m in transformer s4d s4 mamba mamba2; do
  python -m experiments.ssm --config experiments/configs/ssm.py:sc256_$m --config.seed=0 \
    --config.progress=False --config.train.num_updates=2 --config.train.eval_every=0 \
    --config.train.checkpoint_every=2 --workdir results/ssm/table/cpu_recheck/$m > results/ssm/table/cpu_recheck/$m.log 2>&1
done
python results/ssm/table/cpu_recheck/compare.py  # prints compare.txt, writes compare.json
