"""Routing accuracy and pass@1 of a routed sub-model library against each sub-model alone and dense.

The workload mixes HumanEval prompts of four languages (Python, and the Java,
C++ and JavaScript translations); a prompt's label is its language. Each
sub-model's language is its calibration source (``--label NAME=LANG``
overrides). For every router (classifier, perplexity; each alone, and
``declared+ROUTER``: a prompt whose code fences declare its language goes to
that language's sub-model, the router decides the rest) the script reports:

* routing accuracy on the HumanEval prompts, per language, and the share
  that fell back to the default (counted as misrouted);
* routing accuracy on held-out windows of each sub-model's calibration
  source (text its calibration never saw);
* the routing time per request (median and p95);
* pass@1 of the routed library: each prompt answered by the sub-model its
  router chose (``dense`` when it fell back).

Greedy decoding is deterministic and a completion does not depend on its
batch (`evals.generate`), so each system (every sub-model, and dense) is
evaluated once on every prompt and the routed library's pass@1 is read from
the chosen system's result for each prompt. Each system's results are kept
under ``--work`` (rerunning continues where it stopped); ``--reuse NAME=DIR``
takes a system's results from HumanEval reports already made with the same
greedy settings (the Table IV reproduction's cells of the runs the library
was built from, and its dense cells).

  python scripts/eval_router.py --lib LIB --chat --out results/qwen2.5-coder-0.5b/router/eval_router.json
  python scripts/eval_router.py --lib LIB --limit 20 --tasks humaneval,humaneval-java   # a quick look
  python scripts/eval_router.py --lib LIB --chat --reuse dense=results/qwen2.5-coder-0.5b/evals/dense \\
      --reuse python=results/qwen2.5-coder-0.5b/evals/wanda50-python-s0 ... --out ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TASK_LANGUAGE = {"humaneval": "python", "humaneval-java": "java", "humaneval-cpp": "cpp", "humaneval-js": "javascript"}
ROUTERS = ("classifier", "perplexity", "declared+classifier")


def labels_of(lib, overrides: dict[str, str]) -> dict[str, str]:
  """{sub-model: language}: ``overrides``, else the language of its calibration source or name, else its name."""
  from jaxprune.library import declared

  known = declared.submodel_languages(lib.manifest)
  return {name: overrides.get(name) or known.get(name, name) for name in lib.manifest["submodels"]}


def router_config(route_config, name: str):
  """The settings of router ``name`` (``classifier``, or ``declared+classifier`` to honour declared languages)."""
  use_declared, _, router = name.rpartition("+")
  if use_declared not in ("", "declared"):
    sys.exit(f"unknown router {name}: use ROUTER or declared+ROUTER")
  return dataclasses.replace(route_config, router=router, declared=bool(use_declared))


def prompts_of(task: str, limit: int | None, chat: bool) -> list[tuple[str, str]]:
  """(task id, the text a server routes on) of each problem: the code prompt, or the chat message."""
  from jaxprune.evals import codegen, humaneval

  language = humaneval.language(task)
  problems = humaneval.select(language.problems()[0], humaneval.HumanEvalConfig(limit=limit))
  return [(p.task_id, codegen.chat_prompt(p, language).user if chat else p.prompt) for p in problems]


def route_all(models, texts: list[str], router: str, route_config) -> list[dict[str, Any]]:
  config = router_config(route_config, router)
  return [r.as_json() for r in models.route_many(texts, config)]


def accuracy(routes: list[dict[str, Any]], want: list[str], labels: dict[str, str]) -> dict[str, Any]:
  hits = [labels.get(r["chosen"]) == w and not r["fallback"] for r, w in zip(routes, want)]
  seconds = np.asarray([r["seconds"] for r in routes])
  return {"accuracy": float(np.mean(hits)) if hits else None, "n": len(hits),
          "fallback": int(sum(r["fallback"] for r in routes)),
          "route_ms_p50": float(np.percentile(seconds, 50) * 1e3) if len(seconds) else None,
          "route_ms_p95": float(np.percentile(seconds, 95) * 1e3) if len(seconds) else None}


def held_out_texts(source: str, tokenizer, windows: int, seqlen: int) -> list[str]:
  from jaxprune import calibration

  tokens = calibration.held_out(source, tokenizer, seqlen, windows)
  return [tokenizer.decode([int(t) for t in row]) for row in tokens]


def reused(folder: Path, task: str, ids: list[str], args) -> dict[str, int] | None:
  """{task id: solved} of one task from a full HumanEval report (``folder/<task>.json``, as
  `jaxprune eval` and scripts/reproduce_languages.py write them), if it was made with the same greedy
  settings and holds every problem asked for; else None."""
  path = folder / f"{task}.json"
  if not path.is_file():
    return None
  report = json.loads(path.read_text())
  sampling = report.get("sampling") or report.get("config", {}).get("sampling", {})
  same = (bool(report.get("config", {}).get("chat")) == args.chat and sampling.get("temperature") == 0.0
          and sampling.get("num_samples") == 1 and sampling.get("max_new_tokens") == args.max_new_tokens)
  per_problem = report.get("per_problem", {})
  if not same or not set(ids) <= set(per_problem):
    print(f"{path}: other settings or problems; generating instead", file=sys.stderr)
    return None
  return {tid: int(per_problem[tid]["correct"]) for tid in ids}


def system_report(models, name: str, ids: dict[str, list[str]], args, work: Path,
                  reuse: Path | None) -> dict[str, dict[str, int]]:
  """{task: {task id: solved}} of one system (a sub-model or dense): from ``reuse``'s reports where they fit,
  else generated now (greedy) and cached under ``work``."""
  from jaxprune.evals import tasks as tasks_lib
  from jaxprune import store

  path = work / f"{name}.json"
  key = {"limit": args.limit, "chat": args.chat, "max_new_tokens": args.max_new_tokens}
  cached = json.loads(path.read_text()) if path.exists() else {}
  solved = cached.get("solved", {}) if cached.get("key") == key else {}
  known = set(solved)
  for task in ids:
    if task not in solved and reuse is not None and (found := reused(reuse, task, ids[task], args)) is not None:
      solved[task] = found
  missing = tuple(t for t in ids if t not in solved)
  if missing:
    loaded = dataclasses.replace(models.loaded, model=models.model(name))
    config = tasks_lib.EvalConfig(model=str(models.lib.base), tasks=missing, greedy=True, chat=args.chat,
                                  limit=args.limit, max_new_tokens=args.max_new_tokens,
                                  gen_batch_size=args.gen_batch_size, samples=False)
    print(f"evaluating {name} on {', '.join(missing)} ...", file=sys.stderr, flush=True)
    for task, report in tasks_lib.run_tasks(loaded, config).items():
      solved[task] = {tid: int(e["correct"]) for tid, e in report["per_problem"].items()}
  if set(solved) != known:
    store.write_json_atomic(path, {"key": key, "solved": solved})
  return {t: {tid: solved[t][tid] for tid in ids[t]} for t in ids}


def routed_library_pass(models, chosen: dict[str, dict], ids: dict[str, list[str]], args,
                        work: Path) -> dict[str, dict[str, float]]:
  """pass@1 per task (and ``mixed``) of dense, each sub-model alone, and the library under each router."""
  from jaxprune.library import models as models_lib

  reuse = dict(x.split("=", 1) for x in args.reuse)
  systems = {name: system_report(models, name, ids, args, work, Path(reuse[name]) if name in reuse else None)
             for name in (models_lib.DENSE, *models.names)}
  pass_at_1 = {name: {t: float(np.mean(list(solved[t].values()))) for t in ids} for name, solved in systems.items()}
  for router, task_routes in chosen.items():
    pass_at_1[f"routed ({router})"] = routed_pass(systems, task_routes, ids)
  counts = {t: len(ids[t]) for t in ids}
  for row in pass_at_1.values():
    row["mixed"] = sum(row[t] * counts[t] for t in ids) / sum(counts.values())
  return pass_at_1


def routed_pass(systems: dict[str, dict], routes: dict[str, list[dict]], ids: dict[str, list[str]]) -> dict[str, float]:
  """pass@1 per task when each prompt is answered by its routed system."""
  return {task: float(np.mean([systems[r["chosen"]][task][tid] for r, tid in zip(task_routes, ids[task])]))
          for task, task_routes in routes.items()}


def table(result: dict[str, Any]) -> str:
  tasks = result["tasks"]
  lines = []
  if result["pass_at_1"]:
    lines = ["| system | " + " | ".join(tasks) + " | mixed |", "|---" * (len(tasks) + 2) + "|", ""]
    for name, row in result["pass_at_1"].items():
      lines.insert(-1, f"| {name} | " + " | ".join(f"{100 * row[t]:.1f}" for t in tasks) + f" | {100 * row['mixed']:.1f} |")
  lines += ["| router | HumanEval prompts | fallback | held-out files | route ms p50 / p95 |", "|---|---|---|---|---|"]
  for router, r in result["routing"].items():
    held = r["held_out"]["accuracy"]
    lines.append(f"| {router} | {100 * r['prompts']['accuracy']:.1f}% | {r['prompts']['fallback']} |"
                 f" {'-' if held is None else f'{100 * held:.1f}%'} |"
                 f" {r['prompts']['route_ms_p50']:.1f} / {r['prompts']['route_ms_p95']:.1f} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--lib", required=True, help="library folder (jaxprune library build)")
  p.add_argument("--tasks", default=",".join(TASK_LANGUAGE), help="code tasks of the workload")
  p.add_argument("--limit", type=int, default=None, help="problems per task at most")
  p.add_argument("--chat", action="store_true", help="chat prompting (route on the user message)")
  p.add_argument("--max-new-tokens", type=int, default=512)
  p.add_argument("--gen-batch-size", type=int, default=64)
  p.add_argument("--held-out-windows", type=int, default=32, help="held-out windows per sub-model's source")
  p.add_argument("--held-out-seqlen", type=int, default=256)
  p.add_argument("--label", action="append", default=[], metavar="NAME=LANG", help="a sub-model's language")
  p.add_argument("--routers", default=",".join(ROUTERS),
                 help="routers to measure, each ROUTER (alone) or declared+ROUTER (%(default)s)")
  p.add_argument("--reuse", action="append", default=[], metavar="NAME=DIR",
                 help="a system's HumanEval reports already made (DIR/<task>.json, e.g. reproduce_languages' cells"
                      " of the run the sub-model was built from; dense for the base): used where the settings match")
  p.add_argument("--routing-only", action="store_true",
                 help="measure the routers only (no generation): pass@1 is left out of --out")
  p.add_argument("--work", default=None, help="folder of per-system reports (default: beside --out)")
  p.add_argument("--out", required=True, help="JSON to write")
  args = p.parse_args(argv)

  from jaxprune import calibration, runs, store
  from jaxprune.library import models as models_lib

  tasks = tuple(t for t in args.tasks.split(",") if t)
  unknown = [t for t in tasks if t not in TASK_LANGUAGE]
  if unknown:
    sys.exit(f"unknown task {unknown[0]}: use {', '.join(TASK_LANGUAGE)}")
  models = models_lib.SubModels.load(args.lib, lazy=True)  # weights only for the perplexity router or generation
  labels = labels_of(models.lib, dict(x.split("=", 1) for x in args.label))
  route_config = models_lib.route_config(models.lib)
  out = Path(args.out)
  work = Path(args.work) if args.work else out.parent / (out.stem + "-systems")
  work.mkdir(parents=True, exist_ok=True)
  started = time.perf_counter()

  prompts = {t: prompts_of(t, args.limit, args.chat) for t in tasks}
  ids = {t: [tid for tid, _ in ps] for t, ps in prompts.items()}
  routing, chosen = {}, {}
  for router in args.routers.split(","):
    task_routes = {t: route_all(models, [text for _, text in ps], router, route_config) for t, ps in prompts.items()}
    flat = [r for t in tasks for r in task_routes[t]]
    want = [TASK_LANGUAGE[t] for t in tasks for _ in task_routes[t]]
    held_routes, held_want = [], []
    for name, entry in models.lib.manifest["submodels"].items():
      source = (entry.get("calibration") or {}).get("source")
      if source:
        texts = held_out_texts(source, models.tokenizer, args.held_out_windows, args.held_out_seqlen)
        held_routes += route_all(models, texts, router, route_config)
        held_want += [labels[name]] * len(texts)
    routing[router] = {"prompts": accuracy(flat, want, labels),
                       "per_task": {t: accuracy(task_routes[t], [TASK_LANGUAGE[t]] * len(task_routes[t]), labels)
                                    for t in tasks},
                       "held_out": accuracy(held_routes, held_want, labels),
                       "chosen": {t: [r["chosen"] for r in task_routes[t]] for t in tasks}}
    chosen[router] = task_routes

  pass_at_1 = {} if args.routing_only else routed_library_pass(models, chosen, ids, args, work)
  result = {"command": " ".join(["python", "scripts/eval_router.py", *(sys.argv[1:] if argv is None else argv)]),
            "library": calibration.portable_path(str(models.lib.path)), "base": models.lib.manifest["base"], "labels": labels,
            "tasks": list(tasks), "limit": args.limit, "chat": args.chat, "max_new_tokens": args.max_new_tokens,
            "route_config": dataclasses.asdict(route_config), "routing": routing, "pass_at_1": pass_at_1,
            "seconds": round(time.perf_counter() - started, 1), "versions": runs.versions()}
  out.parent.mkdir(parents=True, exist_ok=True)
  store.write_json_atomic(out, result)
  print(table(result))
  print(f"wrote {out}")
  return result


if __name__ == "__main__":
  main()
