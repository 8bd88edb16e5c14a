"""FlowRL / GRPO / PPO / HPT / TTRL on verifiable synthetic tasks (FLOWRL.md §8).

    python -m experiments.flowrl --config experiments/configs/flowrl.py:smoke --workdir /tmp/flowrl
    python -m experiments.flowrl --config experiments/configs/flowrl.py:cpu \
        --config.rl.algo=grpo --config.seed=1 --workdir /work/results/flowrl/grpo_s1
"""

from absl import app, flags
from ml_collections import config_flags

from flowrl import trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Output directory (reused to resume).")
config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    summary = trainer.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    final = summary.get("final_metrics", {})
    print({k: round(v, 4) for k, v in final.items() if k.startswith("eval/")})


if __name__ == "__main__":
    app.run(main)
