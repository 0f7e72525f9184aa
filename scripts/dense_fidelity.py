"""Dense fidelity: greedy HumanEval pass@1 of a code model in four languages, raw and chat prompting.

Each (prompting, task) cell is one `jaxprune eval` task run on the dense
model, written with every completion, status and output tail to
``OUT/dense/<prompting>/<task>.json`` as soon as it finishes; a rerun reuses
finished cells made with the same settings, so an interrupted run continues.
The table in ``OUT/dense.md`` puts our pass@1 beside the published scores of
the model (bf16 weights, the authors' harness) where we know them.

  python scripts/dense_fidelity.py --model qwen2.5-coder-0.5b
  python scripts/dense_fidelity.py --model qwen2.5-coder-0.5b --prompting raw --tasks humaneval --limit 20
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

TASKS = ("humaneval", "humaneval-java", "humaneval-cpp", "humaneval-js")
PROMPTINGS = ("raw", "chat")
# Published greedy pass@1 (%), Qwen2.5-Coder technical report (arXiv 2409.12186), tables of the
# instruct models: HumanEval, then MultiPL-E's Python, Java, C++ and JavaScript columns.
PUBLISHED = {
    "qwen2.5-coder-0.5b": {"source": "Qwen2.5-Coder technical report, arXiv 2409.12186 (bf16, the authors' harness)",
                           "humaneval": 61.6, "multipl-e python": 62.8, "humaneval-java": 46.2,
                           "humaneval-cpp": 43.5, "humaneval-js": 50.3},
    "qwen2.5-coder-1.5b": {"source": "Qwen2.5-Coder technical report, arXiv 2409.12186 (bf16, the authors' harness)",
                           "humaneval": 70.7, "multipl-e python": 71.2, "humaneval-java": 55.7,
                           "humaneval-cpp": 50.9, "humaneval-js": 62.1},
}
LANGUAGE = {"humaneval": "Python", "humaneval-java": "Java", "humaneval-cpp": "C++", "humaneval-js": "JavaScript"}

log = logging.getLogger("dense_fidelity")


def settings(args, prompting: str) -> dict[str, Any]:
  """What changes a cell's number: a cached cell must have been made with the same."""
  return {"model": args.model, "prompting": prompting, "limit": args.limit, "max_new_tokens": args.max_new_tokens,
          "greedy": True}


def _log_progress(description: str, total: int):
  """A `tasks.Progress` that logs each update (batches finish minutes apart on a CPU)."""
  return lambda done: log.info("%s: %d/%d", description, done, total)


def run_cell(args, loaded, prompting: str, task: str) -> dict[str, Any]:
  """One cell's report, from the cache if it was made with the same settings."""
  from jaxprune.evals import tasks
  from jaxprune import runs, store

  path = Path(args.out) / "dense" / prompting / f"{task}.json"
  wanted = settings(args, prompting)
  if path.exists():
    cached = json.loads(path.read_text())
    if cached.get("settings") == wanted:
      return cached
    log.warning("%s was made with %s: running it again", path, cached.get("settings"))
  config = tasks.EvalConfig(model=args.model, tasks=(task,), greedy=True, limit=args.limit,
                            max_new_tokens=args.max_new_tokens, gen_batch_size=args.gen_batch_size,
                            chat=prompting == "chat")
  log.info("%s, %s prompting", task, prompting)
  report = tasks.run_tasks(loaded, config, progress=_log_progress)[task]
  cell = {"settings": wanted, "command": args.command, "versions": runs.versions(), "report": report}
  path.parent.mkdir(parents=True, exist_ok=True)
  store.write_json_atomic(path, cell)
  return cell


def _cell_text(cell: dict[str, Any] | None) -> str:
  if cell is None:
    return "–"
  report = cell["report"]
  passed = sum(p["correct"] for p in report["per_problem"].values())
  return f"{100 * report['metrics']['pass@1']:.1f} ({passed}/{report['num_problems']})"


def markdown(args, cells: dict[tuple[str, str], dict], elapsed: float) -> str:
  published = PUBLISHED.get(args.model, {})
  lines = [
      f"# Dense fidelity: {args.model}, greedy HumanEval pass@1 in four languages", "",
      f"Made by `{args.command}`"
      + (" from the cells already in `dense/`." if args.table_only else
         f" ({elapsed / 60:.0f} min for the cells this invocation ran; cells already in `dense/` were reused).")
      + " Each cell's JSON in `dense/<prompting>/<task>.json` holds every"
      " completion, its status and the tail of its program's output.", "",
      "| language | published | raw prompt | chat prompt | problems |",
      "|---|---|---|---|---|",
  ]
  for task in args.tasks:
    ref = published.get(task)
    ref_text = f"{ref:.1f}" if ref is not None else "–"
    if task == "humaneval" and "multipl-e python" in published:
      ref_text += f" (MultiPL-E: {published['multipl-e python']:.1f})"
    count = next((c["report"]["num_problems"] for (p, t), c in cells.items() if t == task), "–")
    lines.append(f"| {LANGUAGE[task]} | {ref_text} | {_cell_text(cells.get(('raw', task)))}"
                 f" | {_cell_text(cells.get(('chat', task)))} | {count} |")
  if published:
    lines += ["", f"Published: {published['source']}; pass@1 in %. Ours: pass@1 in % (solved/problems),"
              " greedy, `--max-new-tokens " + str(args.max_new_tokens) + "`, on the 4-bit GGUF weights dequantized"
              " to float32. Java, C++ and JavaScript problems are our translations of HumanEval (MultiPL-E's"
              " method): the excluded untranslatable problems make their counts differ from 164."]
  lines += ["", "Seconds per cell (generation and execution, on the machine that made it):", "",
            "| prompting | task | seconds | generate s | execute s |", "|---|---|---|---|---|"]
  for (prompting, task), cell in sorted(cells.items()):
    t = cell["report"].get("timings", {})
    lines.append(f"| {prompting} | {task} | {cell['report']['seconds']:.0f} | {t.get('generate_s', 0):.0f}"
                 f" | {t.get('execute_s', 0):.0f} |")
  if args.notes and Path(args.notes).exists():
    lines += ["", Path(args.notes).read_text().strip()]
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="qwen2.5-coder-0.5b")
  parser.add_argument("--out", default=None, help="default: results/<model>")
  parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
  parser.add_argument("--prompting", nargs="+", default=list(PROMPTINGS), choices=PROMPTINGS)
  parser.add_argument("--limit", type=int, default=None, help="first N problems per task (default: all)")
  parser.add_argument("--max-new-tokens", type=int, default=512)
  parser.add_argument("--gen-batch-size", type=int, default=64)
  parser.add_argument("--table-only", action="store_true",
                      help="write dense.md from the cells already made, running none (cells still missing show as –)")
  parser.add_argument("--notes", default=None, help="a markdown file appended to dense.md (findings, explanations)")
  args = parser.parse_args(argv)
  args.out = args.out or f"results/{args.model}"
  args.command = "python scripts/dense_fidelity.py " + " ".join(argv if argv is not None else sys.argv[1:])
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

  from jaxprune import converters

  start = time.perf_counter()
  cells = {}
  if not args.table_only:
    loaded = converters.load_model(args.model)
    for prompting in args.prompting:
      for task in args.tasks:
        cells[(prompting, task)] = run_cell(args, loaded, prompting, task)
        log.info("%s %s: %s", prompting, task, _cell_text(cells[(prompting, task)]))
  # Cells of the other promptings already on disk join the table too.
  for prompting in PROMPTINGS:
    for task in args.tasks:
      path = Path(args.out) / "dense" / prompting / f"{task}.json"
      if (prompting, task) not in cells and path.exists():
        cached = json.loads(path.read_text())
        if cached.get("settings") == settings(args, prompting):
          cells[(prompting, task)] = cached
  text = markdown(args, cells, time.perf_counter() - start)
  (Path(args.out) / "dense.md").write_text(text)
  print(text)


if __name__ == "__main__":
  main()
