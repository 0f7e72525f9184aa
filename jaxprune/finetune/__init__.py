"""Masked fine-tuning of a pruned sub-model: win back what pruning costs, keeping its zeros.

Example:
  >>> from jaxprune import finetune
  >>> config = finetune.FinetuneConfig(masks="runs/python", out="runs/python-ft", calib="python",
  ...                                  train=finetune.TrainConfig(steps=200, lr=5e-5))
  >>> finetune.finetune_run(config)   # a run like any other: export, eval, compare read it

Modules: `step` (pure: surgery, loss, the optax train step), `driver` (jit,
mesh, step loop), `checkpoints` (periodic Orbax state), `run` (the run
directory), `cli` (the ``jaxprune finetune`` flags).
"""

from jaxprune.finetune.driver import TrainConfig, TrainResult, train
from jaxprune.finetune.run import FinetuneConfig, finetune_run, training_tokens

__all__ = ["FinetuneConfig", "TrainConfig", "TrainResult", "finetune_run", "train", "training_tokens"]
