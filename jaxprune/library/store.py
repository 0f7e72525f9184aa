"""Sub-model libraries on disk: one base model, many masks over it.

LIB/
  library.json                  manifest: format, base model (id, content hash), sub-models, router settings
  base/                         the dense model as an HF folder (safetensors + config + tokenizer), once
  submodels/NAME/mask.safetensors     1-bit packed keep-masks per linear (shapes in the metadata)
  submodels/NAME/weights.safetensors  SparseGPT's updated weights, kept values only (absent for Wanda)
  submodels/NAME/run.json             the run's provenance, copied
  submodels/NAME/router.json          the router's training text: the run's calibration text, decoded
  router/background.json              background text (prose) the classifier sends to the default, if given
  router/classifier.safetensors       the cheap router's fitted coefficients (two classes or more)

Every edit (build, add, remove) writes a new library beside the old one
(`jaxprune.outputs`: unchanged files are hard links, not copies) and renames
it into place: the library is always the old one or the new complete one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxprune import outputs, runs
from jaxprune import store as run_store
from jaxprune.errors import JaxpruneError
from jaxprune.library import classifier, router_text, submodels
from jaxprune.library.routers import RouteConfig

log = logging.getLogger(__name__)

MANIFEST = "library.json"
RESERVED = ("auto", "dense")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclasses.dataclass(frozen=True)
class LibraryConfig:
  """A library to build or edit.

  Attributes:
    path: the library folder.
    runs: (name, run directory) of each sub-model to add.
    model: the model the runs were pruned from (build only).
    router_text: (name, domain or text path) replacing a sub-model's calibration text as router training text.
    route: default router settings stored in the manifest (build only).
    background: a domain or text path whose text (e.g. prose) the classifier learns to send to the default (build only).
    router_docs: sequences of each sub-model's calibration source kept as its router text.
    overwrite: build over an existing library.
  """

  path: Path
  runs: tuple[tuple[str, str], ...] = ()
  model: str | None = None
  router_text: tuple[tuple[str, str], ...] = ()
  route: RouteConfig = RouteConfig()
  background: str | None = None
  router_docs: int = 128
  overwrite: bool = False


@dataclasses.dataclass(frozen=True)
class Library:
  """An opened library: its folder and manifest."""

  path: Path
  manifest: dict[str, Any]

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(self.manifest["submodels"])

  @property
  def base(self) -> Path:
    return self.path / "base"

  def submodel(self, name: str) -> Path:
    if name not in self.manifest["submodels"]:
      raise JaxpruneError(f"library {self.path} has no sub-model {name!r}: choose one of {', '.join(self.names)}")
    return self.path / "submodels" / name


def open_library(path: str | os.PathLike) -> Library:
  """The library at ``path``; one line if it is not one."""
  path = Path(path).expanduser()
  try:
    manifest = json.loads((path / MANIFEST).read_text())
  except FileNotFoundError:
    raise JaxpruneError(f"{path} is not a jaxprune library (no {MANIFEST}): make one with"
                        " `jaxprune library build LIB --model M --run NAME=RUN`") from None
  except (OSError, ValueError) as err:
    raise JaxpruneError(f"{path / MANIFEST} cannot be read ({err}): rebuild the library") from None
  if manifest.get("format") != outputs.LIBRARY_FORMAT:
    raise JaxpruneError(f"{path / MANIFEST} has format {manifest.get('format')!r}, not {outputs.LIBRARY_FORMAT}:"
                        " rebuild it with this jaxprune")
  return Library(path, manifest)


def read_submodel(lib: Library, name: str) -> tuple[dict[str, np.ndarray], dict[str, list[int]], dict[str, np.ndarray]]:
  """(packed masks, shapes, kept values of updated weights) of a sub-model."""
  from safetensors import safe_open
  from safetensors.numpy import load_file

  folder = lib.submodel(name)
  with safe_open(str(folder / "mask.safetensors"), "numpy") as f:
    shapes = json.loads(f.metadata()["shapes"])
  packed = load_file(str(folder / "mask.safetensors"))
  kept = load_file(str(folder / "weights.safetensors")) if (folder / "weights.safetensors").exists() else {}
  return packed, shapes, kept


def read_classifier(lib: Library) -> classifier.Classifier | None:
  """The fitted classifier, or None (a library of one sub-model)."""
  from safetensors import safe_open
  from safetensors.numpy import load_file

  path = lib.path / "router" / "classifier.safetensors"
  if not path.exists():
    return None
  with safe_open(str(path), "numpy") as f:
    meta = classifier.from_metadata(f.metadata())
  return classifier.load(load_file(str(path)), meta)


def router_texts(lib: Library) -> dict[str, list[str]]:
  return {name: json.loads((lib.submodel(name) / "router.json").read_text())["texts"] for name in lib.names}


# --------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------- #


def _check_names(pairs: tuple[tuple[str, str], ...], existing: tuple[str, ...] = ()) -> None:
  seen = set(existing)
  for name, _ in pairs:
    if name in RESERVED or not _NAME.match(name):
      raise JaxpruneError(f"sub-model name {name!r}: use letters, digits, '.', '_' or '-' (not {' or '.join(RESERVED)})")
    if name in seen:
      where = "the library already has one" if name in existing else "given twice"
      raise JaxpruneError(f"sub-model {name!r}: {where}; choose another name (or `jaxprune library remove` it first)")
    seen.add(name)


def _check_run(name: str, run_dir: str, base_hash: str, base_id: str) -> dict[str, Any]:
  record = run_store.load_record(run_dir)
  made_for = record.get("model", {})
  if made_for.get("hash") != base_hash:
    raise JaxpruneError(f"run {run_dir} ({name}) was pruned from {made_for.get('id')} (hash {made_for.get('hash')}),"
                        f" not the library's base {base_id} (hash {base_hash}): give runs of that model only")
  return record


def _write_submodel(folder: Path, run_dir: str, tokenizer, docs: int, override: str | None) -> dict[str, Any]:
  from safetensors.numpy import save_file

  masks, record, new_weights = run_store.load_run(run_dir)
  packed, shapes, kept = submodels.encode(masks, new_weights)
  texts, text_source = router_text.of_run(record, tokenizer, docs, override)
  folder.mkdir(parents=True)
  save_file(packed, str(folder / "mask.safetensors"), metadata={"shapes": json.dumps(shapes)})
  if kept:
    save_file(kept, str(folder / "weights.safetensors"))
  run_store.write_json_atomic(folder / run_store.RUN_JSON, record)
  run_store.write_json_atomic(folder / "router.json", {"source": text_source, "texts": texts})
  options = record.get("options", {})
  cal = record.get("calibration") or {}
  return {
      "run": _portable(run_dir),
      "calibration": {k: cal.get(k) for k in ("source", "nsamples", "seqlen", "seed", "token_hash")},
      "method": options.get("method"), "pattern": options.get("pattern"),
      "sparsity": (record.get("sparsity") or {}).get("__total__"),
      "updated_weights": bool(kept), "router_text": text_source,
  }


def _portable(path: str) -> str:
  from jaxprune import calibration

  return calibration.portable_path(str(Path(path).absolute()))


def _fit_router(partial: Path, names: tuple[str, ...]) -> None:
  from safetensors.numpy import save_file

  folder = partial / "router"
  folder.mkdir(exist_ok=True)
  (folder / "classifier.safetensors").unlink(missing_ok=True)
  background_file = folder / "background.json"
  background = json.loads(background_file.read_text())["texts"] if background_file.exists() else []
  if len(names) + bool(background) < 2:
    return
  texts = {n: json.loads((partial / "submodels" / n / "router.json").read_text())["texts"] for n in names}
  arrays, meta = classifier.fit(texts, background=background)
  save_file(arrays, str(folder / "classifier.safetensors"), metadata=classifier.to_metadata(meta))


def _edit(claim: outputs.Claim, old: Library | None, fill: Callable[[Path], dict[str, Any]]) -> Library:
  """Build the new library in the claim's partial folder (``fill`` writes it, returns the manifest); swap it in."""
  partial = outputs.start(claim)
  try:
    if old is not None:
      _link_tree(old.path, partial)
    manifest = fill(partial)
    manifest["bytes"] = _sizes(partial, tuple(manifest["submodels"]))
    _fit_router(partial, tuple(manifest["submodels"]))
    manifest["bytes"] = _sizes(partial, tuple(manifest["submodels"]))
    run_store.write_json_atomic(partial / MANIFEST, manifest)
    outputs.commit(claim)
  except BaseException:
    outputs.discard(claim)
    raise
  return open_library(claim.path)


def _link_tree(src: Path, dst: Path) -> None:
  """Hard links of every file of ``src`` under ``dst`` (copies where links fail): an edit copies nothing big."""
  for path in src.rglob("*"):
    target = dst / path.relative_to(src)
    if path.is_dir():
      target.mkdir(parents=True, exist_ok=True)
      continue
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
      os.link(path, target)
    except OSError:
      shutil.copy2(path, target)


def _folder_bytes(folder: Path) -> int:
  return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _sizes(root: Path, names: tuple[str, ...]) -> dict[str, Any]:
  weights = sum(p.stat().st_size for p in (root / "base").glob("*.safetensors"))
  per = {n: _folder_bytes(root / "submodels" / n) for n in names}
  router = _folder_bytes(root / "router") if (root / "router").exists() else 0
  total = _folder_bytes(root)
  return {"base": _folder_bytes(root / "base"), "base_weights": weights, "submodels": per, "router": router,
          "total": total}


def build(config: LibraryConfig) -> Library:
  """A new library of ``config.model`` and the runs ``config.runs`` (each pruned from that model)."""
  from jaxprune import converters

  if not config.runs:
    raise JaxpruneError("a library needs at least one sub-model: give --run NAME=RUN_DIR")
  _check_names(config.runs)
  _check_route(config.route, tuple(n for n, _ in config.runs))
  for _, run in config.runs:
    run_store.load_record(run)  # a missing or damaged run.json, before the slow model load
  claim = outputs.claim_dir(config.path, "library", overwrite=config.overwrite, flag="LIB",
                            inputs=(config.model, *(r for _, r in config.runs)))
  loaded = converters.load_model(config.model)
  for name, run in config.runs:
    _check_run(name, run, loaded.content_hash, loaded.source)
  if loaded.tokenizer is None:
    raise JaxpruneError(f"{config.model} has no tokenizer files: a library serves text; use a model with a tokenizer")

  def fill(partial: Path) -> dict[str, Any]:
    converters.export_hf(loaded, partial / "base")
    if config.background:
      (partial / "router").mkdir()
      run_store.write_json_atomic(partial / "router" / "background.json", {
          "source": config.background,
          "texts": router_text.of_source(config.background, loaded.tokenizer, config.router_docs)})
    manifest = {"format": outputs.LIBRARY_FORMAT,
                "base": {**loaded.model_id, "dtype": runs.parameter_dtype(loaded.model)},
                "route": dataclasses.asdict(config.route), "background": config.background, "submodels": {}, "versions": runs.versions()}
    return _add_into(partial, manifest, config, loaded.tokenizer)

  return _edit(claim, None, fill)


def _check_route(route: RouteConfig, names: tuple[str, ...]) -> None:
  if route.default not in (*names, "dense"):
    raise JaxpruneError(f"--default {route.default!r} is not a sub-model of the library: use one of"
                        f" {', '.join((*names, 'dense'))}")


def _add_into(partial: Path, manifest: dict[str, Any], config: LibraryConfig, tokenizer) -> dict[str, Any]:
  overrides = dict(config.router_text)
  unknown = sorted(set(overrides) - {n for n, _ in config.runs})
  if unknown:
    raise JaxpruneError(f"--router-text {unknown[0]}: no --run of that name in this command")
  for name, run in config.runs:
    log.info("adding sub-model %s from %s", name, run)
    manifest["submodels"][name] = _write_submodel(partial / "submodels" / name, run, tokenizer,
                                                  config.router_docs, overrides.get(name))
  return manifest


def base_tokenizer(lib: Library):
  from transformers import AutoTokenizer

  return AutoTokenizer.from_pretrained(str(lib.base))


def add(config: LibraryConfig) -> Library:
  """The library at ``config.path`` with the sub-models of ``config.runs`` added."""
  lib = open_library(config.path)
  if not config.runs:
    raise JaxpruneError("nothing to add: give --run NAME=RUN_DIR")
  _check_names(config.runs, lib.names)
  base = lib.manifest["base"]
  for name, run in config.runs:
    _check_run(name, run, base["hash"], base["id"])
  claim = outputs.claim_dir(lib.path, "library", overwrite=True, flag="LIB", inputs=[r for _, r in config.runs])
  tokenizer = base_tokenizer(lib)
  manifest = json.loads(json.dumps(lib.manifest))
  return _edit(claim, lib, lambda partial: _add_into(partial, manifest, config, tokenizer))


def remove(path: str | os.PathLike, names: tuple[str, ...]) -> Library:
  """The library without the sub-models ``names``."""
  lib = open_library(path)
  for name in names:
    lib.submodel(name)
  left = tuple(n for n in lib.names if n not in names)
  if not left:
    raise JaxpruneError(f"removing {', '.join(names)} would leave the library empty: delete the folder {lib.path} instead")
  manifest = json.loads(json.dumps(lib.manifest))
  if manifest["route"]["default"] in names:
    raise JaxpruneError(f"{manifest['route']['default']} is the library's default sub-model: rebuild with another"
                        " --default before removing it")
  claim = outputs.claim_dir(lib.path, "library", overwrite=True, flag="LIB")

  def fill(partial: Path) -> dict[str, Any]:
    for name in names:
      shutil.rmtree(partial / "submodels" / name)
      del manifest["submodels"][name]
    return manifest

  return _edit(claim, lib, fill)


def info(path: str | os.PathLike) -> dict[str, Any]:
  """What the library holds and what it saves: its bytes against one dense HF export per sub-model."""
  lib = open_library(path)
  sizes = _sizes(lib.path, lib.names)
  dense_exports = len(lib.names) * sizes["base"]
  return {"path": _portable(lib.path), "base": lib.manifest["base"], "route": lib.manifest["route"],
          "submodels": {n: {**e, "bytes": sizes["submodels"][n]} for n, e in lib.manifest["submodels"].items()},
          "bytes": sizes, "dense_exports_bytes": dense_exports,
          "storage_gain": dense_exports / sizes["total"] if sizes["total"] else None}


def format_info(report: dict[str, Any]) -> str:
  mb = lambda b: f"{b / 1e6:,.1f} MB"  # noqa: E731
  base = report["base"]
  lines = [f"library {report['path']}: base {base['id']} (hash {base['hash']}, {base['family']}, {base['dtype']})"
           f" {mb(report['bytes']['base'])}",
           f"{'sub-model':<16} {'calibration':<24} {'method':<10} {'sparsity':>8} {'bytes':>12}"]
  for name, e in report["submodels"].items():
    cal = e["calibration"].get("source") or "-"
    lines.append(f"{name:<16} {str(cal)[-24:]:<24} {e['method'] or '-':<10} {(e['sparsity'] or 0):>8.2%} {mb(e['bytes']):>12}")
  route = report["route"]
  lines.append(f"router: classifier {mb(report['bytes']['router'])}; default {route['default']}")
  lines.append(f"total {mb(report['bytes']['total'])} against {len(report['submodels'])} dense exports"
               f" {mb(report['dense_exports_bytes'])}: {report['storage_gain']:.2f}x smaller")
  return "\n".join(lines)


def export(path: str | os.PathLike, name: str, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
  """Sub-model ``name`` as a plain HF folder (what `jaxprune export` writes for its run)."""
  from jaxprune import converters

  lib = open_library(path)
  lib.submodel(name)
  outputs.claim_dir(out, "export", overwrite=overwrite, inputs=(lib.path,))
  loaded = converters.load_model(str(lib.base))
  packed, shapes, kept = read_submodel(lib, name)
  sub = dataclasses.replace(loaded, model=submodels.apply(loaded.model, packed, shapes, kept))
  return converters.export_hf(sub, out, masks=submodels.unpack(packed, shapes), overwrite=overwrite)
