"""What masked fine-tuning wins back: held-out perplexity of a Wanda 50% sub-model before and after.

  python scripts/finetune_recovery.py --cpu-shared            # SmolLM2, the Python sub-model, 60 steps
  python scripts/finetune_recovery.py --calib java --steps 200 --lr 5e-5
  python scripts/finetune_recovery.py --lora 16
  python scripts/finetune_recovery.py --model qwen2.5-coder-0.5b --nsamples 128 --seqlen 512 --code --chat \
      --steps 500 --lr 2e-5 --train-seqlen 512        # + greedy HumanEval pass@1 in four languages

The sub-model is the reproduction's run (``OUT/runs/wanda50-<calib>-s<seed>``,
pruned now if missing); it is fine-tuned with ``jaxprune finetune``'s library
call on the calibration side of its own domain into ``OUT/runs/<name>``, and
the dense model, the sub-model and the fine-tuned sub-model are evaluated on
the held-out side of every domain (does recovery keep the language
specificity, or wash it out?) and, with ``--code``, by greedy HumanEval
pass@1 in Python, Java, C++ and JavaScript (the settings of
``reproduce_languages.py --table4`` by default, so its cached cells are
reused). Every unit is cached: the runs (the fine-tuning
resumes from its Orbax checkpoints after a kill), each evaluation under
``OUT/evals/``, so rerunning the command continues where it stopped. Writes
``OUT/finetune/<name>.json`` (numbers, settings, losses, timings), ``.md``
(the table) and ``_loss.png`` (the loss curve).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from _reproduce import Experiment, _write_json, evaluate_cached, lazy_run  # noqa: E402
from jaxprune.evals.tasks import EvalConfig  # noqa: E402

log = logging.getLogger("finetune_recovery")
DOMAINS = ("python", "java", "cpp", "javascript", "english")
CODE = ("humaneval", "humaneval-java", "humaneval-cpp", "humaneval-js")


def _parse(argv):
  from jaxprune.finetune import TrainConfig

  d = TrainConfig()
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", default="smollm2-135m")
  p.add_argument("--out", default=None, help="default: results/<model>")
  p.add_argument("--calib", default="python", help="the sub-model's calibration domain, and the training text's")
  p.add_argument("--domains", default=",".join(DOMAINS), help="held-out perplexity domains, comma-separated")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--nsamples", type=int, default=32, help="pruning calibration sequences (the reproduction's)")
  p.add_argument("--seqlen", type=int, default=256, help="pruning and evaluation window tokens")
  p.add_argument("--eval-windows", type=int, default=16)
  p.add_argument("--steps", type=int, default=60)
  p.add_argument("--lr", type=float, default=1e-4)
  p.add_argument("--batch", type=int, default=d.batch)
  p.add_argument("--train-seqlen", type=int, default=d.seqlen)
  p.add_argument("--lora", type=int, default=d.lora)
  p.add_argument("--checkpoint-every", type=int, default=10)
  p.add_argument("--code", action="store_true", help="also greedy HumanEval pass@1 in four languages")
  p.add_argument("--limit", type=int, default=164, help="--code: problems per language")
  p.add_argument("--max-new-tokens", type=int, default=512, help="--code: tokens per completion")
  p.add_argument("--chat", action="store_true", help="--code: prompt through the chat template")
  p.add_argument("--gen-batch-size", type=int, default=EvalConfig.gen_batch_size)
  p.add_argument("--cpu-shared", action="store_true", help="say in the JSON that other work shared the CPU")
  args = p.parse_args(argv)
  args.seeds = [args.seed]
  train = TrainConfig(steps=args.steps, lr=args.lr, batch=args.batch, seqlen=args.train_seqlen,
                      lora=args.lora, seed=args.seed)
  return args, train


def finetuned_cached(exp: Experiment, base, name: str, calib: str, train, every: int) -> Path:
  """The fine-tuned run ``OUT/runs/<name>``: reused when finished with the same settings, else made (resumes)."""
  from jaxprune.finetune import FinetuneConfig, finetune_run

  run_dir = exp.out / "runs" / name
  base_dir = base()
  overwrite = False
  if (run_dir / "run.json").exists():
    record = json.loads((run_dir / "run.json").read_text())["finetune"]
    # the attention and loss chunks change only the order of float32 sums, not what is trained
    wanted = {k: v for k, v in dataclasses.asdict(train).items() if k not in ("attention_chunk", "loss_chunk")}
    if any(record["train"].get(k) != v for k, v in wanted.items()) or record["data"]["source"] != calib:
      raise SystemExit(f"{run_dir} was fine-tuned with other settings: choose another --out or delete it")
    if (run_dir / "weights").is_dir():
      return run_dir
    overwrite = True  # git keeps a run's run.json, not its weights: a fresh checkout trains it again
  log.info("fine-tuning %s into %s", base_dir, run_dir)
  finetune_run(FinetuneConfig(masks=str(base_dir), out=str(run_dir), model=exp.model, calib=calib, train=train,
                              checkpoint_every=every, overwrite=overwrite), loaded=exp.loaded,
               on_step=lambda done, total, loss: log.info("step %d/%d loss %.4f", done, total, loss))
  return run_dir


def plot_losses(losses, path: Path, title: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  losses = np.asarray(losses)
  window = max(1, len(losses) // 10)
  smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
  fig, ax = plt.subplots(figsize=(6, 3.5))
  ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.8, alpha=0.5, label="per step")
  ax.plot(np.arange(window, len(losses) + 1), smooth, lw=2, label=f"mean of {window}")
  ax.set_xlabel("step")
  ax.set_ylabel("training loss (nats/token)")
  ax.set_title(title, fontsize=9)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None) -> dict:
  args, train = _parse(argv)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  command = " ".join(["python", "scripts/finetune_recovery.py", *(sys.argv[1:] if argv is None else argv)])
  load_start = os.getloadavg()
  exp = Experiment.create(args, command)
  start = time.perf_counter()
  domains = tuple(d for d in args.domains.split(",") if d)
  tasks = tuple(f"ppl:{d}" for d in domains) + (CODE if args.code else ())
  base_name = f"wanda50-{args.calib}-s{args.seed}"
  name = f"{base_name}-ft{train.steps}-lr{train.lr:g}" + (f"-lora{train.lora}" if train.lora else "")
  dense = evaluate_cached(exp, None, "dense", tasks)
  base = lazy_run(exp, base_name, args.calib, args.seed)
  before = evaluate_cached(exp, base, base_name, tasks)
  tuned = evaluate_cached(exp, lambda: finetuned_cached(exp, base, name, args.calib, train, args.checkpoint_every),
                          name, tasks)
  run_json = exp.out / "runs" / name / "run.json"
  if not run_json.exists():  # evaluations cached but the run not: make it for its losses
    finetuned_cached(exp, base, name, args.calib, train, args.checkpoint_every)
  ft = json.loads(run_json.read_text())["finetune"]
  elapsed = time.perf_counter() - start
  rows = {"dense": {d: dense[f"ppl:{d}"] for d in domains}, "pruned": {d: before[f"ppl:{d}"] for d in domains},
          "fine-tuned": {d: tuned[f"ppl:{d}"] for d in domains}}
  recovered = {d: (rows["pruned"][d] - rows["fine-tuned"][d]) / (rows["pruned"][d] - rows["dense"][d])
               for d in domains}
  code = {label: {t: cells[t] for t in CODE} for label, cells in (("dense", dense), ("pruned", before),
                                                                   ("fine-tuned", tuned))} if args.code else None
  report = {
      "command": command, "experiment": exp.record(), "base_run": base_name, "run": name,
      "train": dataclasses.asdict(train), "train_tokens": ft["tokens"], "train_seconds": ft["train_seconds"],
      "losses": ft["losses"], "perplexity": rows, "fraction_of_pruning_loss_recovered": recovered,
      "humaneval_greedy": code,
      "elapsed_s": elapsed,
      "cpu": {"count": os.cpu_count(), "shared": bool(args.cpu_shared), "load_average_at_start": load_start,
              "load_average_at_end": os.getloadavg(),
              "note": ("other work used the CPU during this measurement: timings are not clean"
                       if args.cpu_shared else "no other work was declared on the CPU")},
  }
  out = exp.out / "finetune"
  _write_json(out / f"{name}.json", report)
  plot_losses(ft["losses"], out / f"{name}_loss.png", f"{exp.model}: {base_name}, {train.steps} steps, lr {train.lr:g}")
  lines = [f"# Fine-tuning the {args.calib} sub-model of {exp.model}", "",
           f"Made by `{command}`; training {train.steps} steps x {train.batch} x {train.seqlen} tokens"
           f" ({ft['tokens']:,} tokens of the {args.calib} calibration side) in {ft['train_seconds'] / 60:.1f} min"
           f" on {os.cpu_count()} CPU cores" + (" shared with other work" if args.cpu_shared else "") + ".",
           f" Held-out perplexity, {exp.eval_windows} windows of {exp.seqlen} tokens per domain.", "",
           "| model | " + " | ".join(domains) + " |", "|---|" + "---|" * len(domains)]
  for label, row in rows.items():
    lines.append(f"| {label} | " + " | ".join(f"{row[d]:.2f}" for d in domains) + " |")
  lines.append("| recovered | " + " | ".join(f"{recovered[d]:.0%}" for d in domains) + " |")
  if code:
    lines += ["", f"Greedy HumanEval pass@1 ({args.limit} problems at most per language"
              + (", chat prompting" if args.chat else "") + "):", "",
              "| model | " + " | ".join(CODE) + " |", "|---|" + "---|" * len(CODE)]
    for label, cells in code.items():
      lines.append(f"| {label} | " + " | ".join(f"{100 * cells[t]['pass@1']:.1f} ({len(cells[t]['solved'])}/"
                                                 f"{cells[t]['problems']})" for t in CODE) + " |")
  (out / f"{name}.md").write_text("\n".join(lines) + "\n")
  print((out / f"{name}.md").read_text())
  return report


if __name__ == "__main__":
  main()
