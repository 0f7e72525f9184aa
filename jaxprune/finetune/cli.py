"""Flags of ``jaxprune finetune`` -> a frozen `FinetuneConfig` -> `finetune_run`, with a progress bar.

Registered in `jaxprune.cli` by `add_parser`; defaults come from the configs' field defaults.
"""

from __future__ import annotations

import dataclasses
import sys

from jaxprune.finetune.driver import TrainConfig
from jaxprune.finetune.run import FinetuneConfig

_TRAIN = TrainConfig()
_FIELDS = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}


def add_parser(sub) -> None:
  p = sub.add_parser("finetune", help="fine-tune the kept weights of a pruned sub-model (pruned weights stay zero)")
  p.add_argument("--model", default=_FIELDS["model"], help="the model the run was pruned from (default: %(default)s)")
  p.add_argument("--masks", required=True, help="run directory written by `jaxprune prune` (or `finetune`)")
  p.add_argument("--calib", default=_FIELDS["calib"],
                 help="domain (or text file/folder) whose calibration side is the training text; its held-out"
                      " files stay unseen (default: %(default)s)")
  p.add_argument("--steps", type=int, default=_TRAIN.steps, help="optimizer steps (default: %(default)s)")
  p.add_argument("--lr", type=float, default=_TRAIN.lr, help="peak AdamW learning rate (default: %(default)s)")
  p.add_argument("--batch", type=int, default=_TRAIN.batch,
                 help="sequences per step, split over the devices (default: %(default)s)")
  p.add_argument("--seqlen", type=int, default=_TRAIN.seqlen, help="tokens per sequence (default: %(default)s)")
  p.add_argument("--warmup", type=float, default=_TRAIN.warmup,
                 help="fraction of the steps of linear warmup before the cosine decay (default: %(default)s)")
  p.add_argument("--weight-decay", type=float, default=_TRAIN.weight_decay, help="AdamW weight decay")
  p.add_argument("--clip", type=float, default=_TRAIN.clip, help="global gradient-norm clip (0: none)")
  p.add_argument("--lora", type=int, default=_TRAIN.lora, metavar="RANK",
                 help="train a masked rank-RANK update of each prunable linear instead of its weights (0: full)")
  p.add_argument("--lora-alpha", type=float, default=_TRAIN.lora_alpha, help="LoRA scale: alpha / rank")
  p.add_argument("--seed", type=int, default=_TRAIN.seed, help="seed of the training sample and LoRA init")
  p.add_argument("--attention-chunk", type=int, default=_TRAIN.attention_chunk,
                 help="queries per chunk of causal attention (0: unchunked)")
  p.add_argument("--loss-chunk", type=int, default=_TRAIN.loss_chunk,
                 help="positions per chunk of the head and loss: bounds the logits' memory (0: unchunked)")
  p.add_argument("--checkpoint-every", type=int, default=_FIELDS["checkpoint_every"],
                 help="steps between Orbax checkpoints; the same command after a kill resumes (default: %(default)s)")
  p.add_argument("--dtype", default=None, help="parameter dtype (float32, bfloat16, float16); default: the checkpoint's")
  p.add_argument("--out", required=True, help="run directory to write (masks + fine-tuned weights + run.json)")
  p.add_argument("--overwrite", action="store_true", help="replace an existing run directory (and its checkpoints)")
  p.set_defaults(func=run)


def run(args) -> int:
  from tqdm.auto import tqdm

  from jaxprune.finetune.run import finetune_run

  train = TrainConfig(
      steps=args.steps, lr=args.lr, batch=args.batch, seqlen=args.seqlen, warmup=args.warmup,
      weight_decay=args.weight_decay, clip=args.clip, lora=args.lora, lora_alpha=args.lora_alpha,
      seed=args.seed, attention_chunk=args.attention_chunk, loss_chunk=args.loss_chunk)
  config = FinetuneConfig(masks=args.masks, out=args.out, model=args.model, calib=args.calib, train=train,
                          checkpoint_every=args.checkpoint_every, overwrite=args.overwrite, dtype=args.dtype)
  bars = []  # drawn at the first step: a refused command prints its one line alone

  def bar(done: int):
    if not bars:
      bars.append(tqdm(total=train.steps, unit="step", file=sys.stderr))
    bars[0].update(done - bars[0].n)
    return bars[0]

  def on_step(done: int, _total: int, loss: float) -> None:
    bar(done).set_postfix(loss=f"{loss:.4f}")

  def on_resume(done: int, total: int) -> None:
    print(f"resuming after step {done} of {total} (an interrupted run of the same command)", file=sys.stderr)
    bar(done)

  try:
    result = finetune_run(config, on_step=on_step, on_resume=on_resume)
  finally:
    for b in bars:
      b.close()
  print(f"fine-tuned {len(result.weights)} matrices of {args.model} for {train.steps} steps"
        f" (loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}); masks, weights and run.json in {args.out}")
  return 0
