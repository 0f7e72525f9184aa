"""The model card of an export: a ``README.md`` in the Hub's format saying what the sub-model is.

Front matter (huggingface_hub's `ModelCardData`): ``base_model``, the licence
carried over from the source (``license``, ``license_name``, ``license_link``),
``tags: [pruned, <method>, jaxprune, <calibration language>]``,
``library_name: transformers``, ``pipeline_tag: text-generation``, a
``jaxprune`` block (method, sparsity, pattern, calibration, seed, version, run
id) and, given the report of ``jaxprune eval --masks RUN``, the Hub's
``model-index`` with its metrics. The body says how the sub-model was made, the
achieved sparsity per layer type, the evaluation results, how to load it and
under which licence its (derived) weights are.

`card` is pure (dictionaries in, a `ModelCard` out); `origin_of` reads what the
source says about itself (the built-in registry, a folder's own card and
licence files, a GGUF's metadata); `check_eval` refuses a report of another
model or run.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

LICENCE_FILES = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE|USE_POLICY)([.-].*)?$", re.IGNORECASE)
_MAX_LICENCE_BYTES = 1 << 20
# Notices a licence asks every redistribution to carry (Gemma Terms of Use, section 3.1).
NOTICES = {"gemma": "Gemma is provided under and subject to the Gemma Terms of Use found at"
                    " [ai.google.dev/gemma/terms](https://ai.google.dev/gemma/terms)."}
# task -> (Hub dataset id, dataset name, dataset config, Hub task type) for the model-index.
DATASETS = {
    "humaneval": ("openai/openai_humaneval", "HumanEval", None, "text-generation"),
    "humaneval-java": ("nuprl/MultiPL-E", "HumanEval-Java (MultiPL-E's method)", "humaneval-java", "text-generation"),
    "humaneval-cpp": ("nuprl/MultiPL-E", "HumanEval-C++ (MultiPL-E's method)", "humaneval-cpp", "text-generation"),
    "humaneval-js": ("nuprl/MultiPL-E", "HumanEval-JS (MultiPL-E's method)", "humaneval-js", "text-generation"),
    "hellaswag": ("Rowan/hellaswag", "HellaSwag", None, "text-generation"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "ARC-Easy", "text-generation"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "ARC-Challenge", "text-generation"),
    "boolq": ("google/boolq", "BoolQ", None, "text-generation"),
    "winogrande": ("allenai/winogrande", "WinoGrande", None, "text-generation"),
    "openbookqa": ("allenai/openbookqa", "OpenBookQA", None, "text-generation"),
    "piqa": ("ybisk/piqa", "PIQA", None, "text-generation"),
    "gsm8k": ("openai/gsm8k", "GSM8K", "main", "text-generation"),
    "meteor-en-fr": ("wmt/wmt14", "WMT14 English-French", "fr-en", "translation"),
    "meteor-fr-en": ("wmt/wmt14", "WMT14 French-English", "fr-en", "translation"),
}
METRIC_TYPES = {"ppl": "perplexity", "acc": "accuracy"}


@dataclasses.dataclass(frozen=True)
class Origin:
  """What the source model says about itself.

  Attributes:
    source: what ``--model`` named (built-in name, folder or GGUF file name).
    description: a line on the source (the built-in's description), or None.
    base_model: its Hub repository id, None where the source does not say.
    license: Hub licence identifier ("apache-2.0", "gemma", "other"; "unknown" where the source does not say).
    license_name, license_link: the licence's name and terms where ``license`` is not enough.
    licence_files: (file name, text) of the licence files shipped with the source, carried into the export.
  """

  source: str
  description: str | None = None
  base_model: str | None = None
  license: str = "unknown"
  license_name: str | None = None
  license_link: str | None = None
  licence_files: tuple[tuple[str, str], ...] = ()


def origin_of(source: str) -> Origin:
  """The `Origin` of a built-in name, an HF folder or a GGUF file."""
  from jaxprune.converters import builtin

  if builtin.is_builtin(source):
    entry = builtin.BUILTINS[source]
    return Origin(source, entry.description, entry.base_model, entry.license_id or "other",
                  None if entry.license_id else entry.licence, entry.license_link)
  path = Path(source).expanduser()
  if path.is_dir():
    return _folder_origin(source, path)
  return _gguf_origin(source, path)


def builtin_name(source: str) -> bool:
  from jaxprune.converters import builtin

  return builtin.is_builtin(source)


def _folder_origin(source: str, folder: Path) -> Origin:
  from huggingface_hub import metadata_load

  meta = {}
  if (folder / "README.md").is_file():
    try:
      meta = metadata_load(folder / "README.md") or {}
    except Exception as err:  # a card whose front matter is not YAML tells us nothing
      log.warning("ignoring the front matter of %s (%s)", folder / "README.md", err)
  cached = re.search(r"models--([^/]+)--([^/]+)/snapshots/", folder.resolve().as_posix() + "/")
  files = []
  for path in sorted(folder.iterdir()):
    if LICENCE_FILES.match(path.name) and path.is_file() and path.stat().st_size <= _MAX_LICENCE_BYTES:
      files.append((path.name, path.read_text(encoding="utf-8", errors="replace")))
  return Origin(source, None, f"{cached[1]}/{cached[2]}" if cached else None, str(meta.get("license") or "unknown"),
                meta.get("license_name"), meta.get("license_link"), tuple(files))


def _gguf_origin(source: str, path: Path) -> Origin:
  import gguf

  try:
    fields = gguf.GGUFReader(str(path)).fields
  except Exception as err:  # gguf-py raises many types; the model's own load reports a bad file
    log.warning("no licence read from %s (%s)", path, err)
    return Origin(source)

  def text(key: str) -> str | None:
    field = fields.get(key)
    return str(field.contents()) if field is not None else None

  return Origin(source, text("general.name"), text("general.source.huggingface.repository"),
                text("general.license") or "unknown", text("general.license.name"), text("general.license.link"))


# --------------------------------------------------------------------------- #
# Pure pieces
# --------------------------------------------------------------------------- #


def sparsity_by_type(report: Mapping[str, float]) -> list[tuple[str, int, float, float, float]]:
  """(layer type, matrices, mean, min, max) of run.json's per-matrix sparsity, by block-relative name."""
  from jaxprune import compare

  groups: dict[str, list[float]] = {}
  for name, value in report.items():
    if not name.startswith("__"):
      groups.setdefault(compare.projection_of(name), []).append(float(value))
  return [(kind, len(v), sum(v) / len(v), min(v), max(v)) for kind, v in sorted(groups.items())]


def calibration_language(record: Mapping[str, Any]) -> str | None:
  """The named calibration domain of a run (python, java, ...), None for files, tokens or none."""
  from jaxprune.calibration import corpora

  source = (record.get("calibration") or {}).get("source")
  return source if source in corpora.DOMAINS else None


def check_eval(report: Any, record: Mapping[str, Any], path: str) -> Mapping[str, Any]:
  """``report`` if it is `jaxprune eval`'s report of this run's sub-model, else a one-line error."""
  if not isinstance(report, dict) or not isinstance(report.get("tasks"), dict) or "model" not in report:
    raise JaxpruneError(f"--eval {path} is not a report of `jaxprune eval`: pass the file its --out wrote")
  run = report.get("masks")
  if not run:
    raise JaxpruneError(f"--eval {path} evaluates the dense model: pass the report of"
                        " `jaxprune eval --masks RUN` for the run you export")
  if (report["model"] or {}).get("hash") != (record.get("model") or {}).get("hash"):
    raise JaxpruneError(f"--eval {path} evaluates model {report['model'].get('id')}, not the run's"
                        f" {record['model'].get('id')}: pass the report of this run's sub-model")
  same = (run.get("options") == record.get("options")
          and (run.get("calibration") or {}).get("token_hash") == (record.get("calibration") or {}).get("token_hash"))
  if not same:
    raise JaxpruneError(f"--eval {path} evaluates the run in {run.get('run')}, pruned with other options or"
                        " calibration: pass the report of `jaxprune eval --masks` with the run you export")
  return report


def public_task(task: str) -> str:
  """A task's name as a public card shows it: ``ppl:FILE`` by the file's name, not this machine's path."""
  if task.startswith("ppl:"):
    domain = task.removeprefix("ppl:")
    return f"ppl:{Path(domain).name or domain}"
  return task


def eval_results(report: Mapping[str, Any]) -> list[EvalResult]:
  """The model-index entries of every metric in a `jaxprune eval` report."""
  results = []
  for task, result in report["tasks"].items():
    shown = public_task(task)
    if shown.startswith("ppl:"):
      named = shown.removeprefix("ppl:")
      dataset = (f"jaxprune/{named}", f"{named}: held-out text (jaxprune corpus)", None, "text-generation")
    else:
      dataset = DATASETS.get(task, (task, task, None, "text-generation"))
    for metric, value in (result.get("metrics") or {}).items():
      results.append(EvalResult(
          task_type=dataset[3], dataset_type=dataset[0], dataset_name=dataset[1], dataset_config=dataset[2],
          metric_type=METRIC_TYPES.get(metric, metric), metric_value=round(float(value), 6),
          metric_name=f"{metric} ({shown})"))
  return results


def _percent(x: float) -> str:
  return f"{100 * x:.2f}%"


def _calibration_lines(calibration: Mapping[str, Any]) -> list[str]:
  source = calibration.get("source")
  if source is None:
    return ["- calibration: none (the method needs no calibration text)"]
  if source == "tokens-file":
    shape = calibration.get("shape") or ["?", "?"]
    return [f"- calibration: an explicit token array ({shape[0]} x {shape[1]} tokens),"
            f" token hash `{calibration.get('token_hash')}`"]
  lines = [f"- calibration domain: `{source}`, {calibration.get('nsamples')} sequences of"
           f" {calibration.get('seqlen')} tokens (seed {calibration.get('seed')}),"
           f" token hash `{calibration.get('token_hash')}`"]
  provenance = calibration.get("provenance") or {}
  if provenance:
    lines.append(f"- calibration text: {provenance.get('source')} (licence {provenance.get('licence')});"
                 f" held-out split {provenance.get('split')}")
    for group in provenance.get("groups") or []:
      lines.append(f"  - {group.get('name')}: {group.get('origin')} ({group.get('licence')},"
                   f" {group.get('documents')} files)")
  return lines


_SETTINGS = {"ppl": ("seqlen", "max_windows"),
             "other": ("limit", "greedy", "chat", "num_samples", "temperature", "top_p", "max_new_tokens")}


def _eval_section(report: Mapping[str, Any]) -> list[str]:
  config = report.get("config") or {}
  kinds = {"ppl" if task.startswith("ppl:") else "other" for task in report["tasks"]}
  keys = [k for kind in ("ppl", "other") if kind in kinds for k in _SETTINGS[kind] if k in config]
  settings = ", ".join(f"{k} {config[k]}" for k in keys)
  lines = ["## Evaluation", "", f"`jaxprune eval` ({settings}):", "", "| task | metric | value |", "|---|---|---|"]
  for task, result in report["tasks"].items():
    for metric, value in (result.get("metrics") or {}).items():
      lines.append(f"| {public_task(task)} | {metric} | {float(value):.4f} |")
  return lines + [""]


def card(origin: Origin, record: Mapping[str, Any], *, name: str, run_id: str,
         evaluation: Mapping[str, Any] | None = None) -> ModelCard:
  """The model card of the export ``name`` of the run ``record`` (run.json) pruned from ``origin``."""
  options = record.get("options") or {}
  calibration = record.get("calibration") or {}
  language = calibration_language(record)
  method = options.get("method", "wanda")
  version = (record.get("versions") or {}).get("jaxprune", "unknown")
  tags = ["pruned", method, "jaxprune"] + ([language] if language else [])
  evals = eval_results(evaluation) if evaluation else []
  summary = {"method": method, "sparsity": options.get("sparsity"), "pattern": options.get("pattern"),
             "allocation": options.get("allocation"), "calibration": calibration.get("source"),
             "calibration_token_hash": calibration.get("token_hash"), "seed": calibration.get("seed"),
             "achieved_sparsity": (record.get("sparsity") or {}).get("__total__"), "version": version,
             "run_id": run_id}
  data = ModelCardData(
      base_model=origin.base_model, license=origin.license, license_name=origin.license_name,
      license_link=origin.license_link, library_name="transformers", pipeline_tag="text-generation", tags=tags,
      model_name=name if evals else None, eval_results=evals or None, jaxprune=summary)
  base = f"[{origin.base_model}](https://huggingface.co/{origin.base_model})" if origin.base_model else None
  shown = origin.source if builtin_name(origin.source) else Path(origin.source).name  # no machine paths
  source = f"`{shown}`" + (f" ({origin.description})" if origin.description else "")
  made_from = f"{base}, read from {source}" if base else source
  domain = f" calibrated on `{language}`" if language else ""
  licence = origin.license_name or origin.license
  terms = f" ([terms]({origin.license_link}))" if origin.license_link else ""
  achieved = summary["achieved_sparsity"]
  lines = [
      f"# {name}", "",
      f"A {_percent(options.get('sparsity', 0))}-sparse sub-model of {made_from}, pruned by {method}{domain}"
      f" with jaxprune. Its weights are derived from the base model's weights (the pruned"
      f" ones set to zero, the others {'updated by SparseGPT' if method == 'sparsegpt' else 'unchanged'}) and are"
      f" under the base model's licence: {licence}{terms}.", "",
      "## How it was made", "",
      f"- method: `{method}`, target sparsity {options.get('sparsity')}, pattern `{options.get('pattern')}`,"
      f" allocation `{options.get('allocation', 'uniform')}`, sequential `{options.get('sequential')}`",
      *_calibration_lines(calibration),
      f"- seed: {calibration.get('seed')}",
      f"- jaxprune {version}, run id `{run_id}` (the sha256 of the run's run.json, first 16 hex digits)",
      f"- achieved sparsity of the prunable matrices: {_percent(achieved) if achieved is not None else 'unknown'}", "",
      "## Achieved sparsity per layer type", "",
      "| layer type | matrices | mean | min | max |", "|---|---|---|---|---|",
      *(f"| {kind} | {n} | {_percent(mean)} | {_percent(lo)} | {_percent(hi)} |"
        for kind, n, mean, lo, hi in sparsity_by_type(record.get("sparsity") or {})), "",
      *(_eval_section(evaluation) if evaluation else []),
      "## Use", "",
      "```python",
      "from transformers import AutoModelForCausalLM, AutoTokenizer",
      f'model = AutoModelForCausalLM.from_pretrained("{name}")',
      f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
      "```", "",
      "The pruned weights are stored as zeros in dense tensors: the files are as large as the base model's.", "",
      "## Licence", "",
      f"These weights are a derivative of {base or source} and are distributed under its licence, {licence}{terms}."
      + (f" The source's licence files are included: {', '.join(f'`{n}`' for n, _ in origin.licence_files)}."
         if origin.licence_files else ""),
  ]
  if origin.license == "unknown":
    lines.append("The source does not state its licence: check the base model's terms before publishing.")
  if origin.license in NOTICES:
    lines += ["", NOTICES[origin.license]]
  return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def files(origin: Origin, record: Mapping[str, Any], *, name: str, run_id: str,
          evaluation: Mapping[str, Any] | None = None) -> dict[str, str]:
  """{file name: text} the export carries: README.md (the card) and the source's licence files."""
  out = dict(origin.licence_files)
  out["README.md"] = str(card(origin, record, name=name, run_id=run_id, evaluation=evaluation))
  return out
