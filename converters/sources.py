"""Streaming readers of checkpoint tensors, one tensor at a time.

A `TensorSource` maps HF parameter names to numpy arrays without loading the
whole checkpoint: safetensors files are memory-mapped by `safe_open`, so the
peak host memory of a load is the model plus one tensor. torch is never needed.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from jaxprune.errors import JaxpruneError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class TensorSource(Protocol):
  """Read-only access to named checkpoint tensors in HF naming and layout."""

  def names(self) -> list[str]: ...

  def shape(self, name: str) -> tuple[int, ...]: ...

  def get(self, name: str) -> np.ndarray: ...


def _check_safetensors_file(path: Path) -> None:
  """Catch truncated or corrupt files with a clear message before reading."""
  size = path.stat().st_size
  try:
    with open(path, "rb") as f:
      (header_len,) = struct.unpack("<Q", f.read(8))
      if header_len <= 0 or 8 + header_len > size:
        raise ValueError("header longer than file")
      header = json.loads(f.read(header_len))
  except (struct.error, ValueError, UnicodeDecodeError) as err:
    raise JaxpruneError(
        f"{path} is not a valid safetensors file ({err}): re-download or re-save the checkpoint"
    ) from None
  end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
  if 8 + header_len + end > size:
    raise JaxpruneError(
        f"{path} is truncated ({size} bytes, the header needs {8 + header_len + end}):"
        " re-download or re-save the checkpoint"
    )


class SafetensorsSource:
  """Tensors of an HF folder: one ``*.safetensors`` file or a sharded index."""

  def __init__(self, folder: str | Path):
    from safetensors import safe_open

    self.folder = Path(folder)
    index = self.folder / "model.safetensors.index.json"
    if index.exists():
      weight_map = json.loads(index.read_text())["weight_map"]
      files = sorted(set(weight_map.values()))
    else:
      files = sorted(p.name for p in self.folder.glob("*.safetensors"))
      weight_map = None
    if not files:
      pickles = sorted(p.name for p in self.folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
      if pickles:
        raise JaxpruneError(
            f"{self.folder} holds only pickle checkpoints ({pickles[0]}), which jaxprune refuses to"
            " load (they can run code): convert them once with transformers,"
            " `AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`"
        )
      raise JaxpruneError(f"{self.folder} has no *.safetensors files: point --model at an HF model folder")
    self._handles = {}
    self._where: dict[str, str] = {}
    for name in files:
      path = self.folder / name
      if not path.exists():
        raise JaxpruneError(f"{path} is listed in the safetensors index but missing: re-download the checkpoint")
      _check_safetensors_file(path)
      try:
        handle = safe_open(str(path), framework="numpy")
      except Exception as err:  # safetensors raises its own error types
        raise JaxpruneError(f"{path} could not be opened as safetensors ({err}): re-download it") from None
      self._handles[name] = handle
      for key in handle.keys():
        self._where[key] = name
    if weight_map is not None:
      missing = sorted(k for k, f in weight_map.items() if self._where.get(k) != f)
      if missing:
        raise JaxpruneError(
            f"the safetensors index lists {missing[0]} in a file that lacks it: the checkpoint is corrupt"
        )

  def names(self) -> list[str]:
    return sorted(self._where)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._handles[self._where[name]].get_slice(name).get_shape())

  def dtype(self, name: str) -> str:
    return self._handles[self._where[name]].get_slice(name).get_dtype()

  def get(self, name: str) -> np.ndarray:
    try:
      return self._handles[self._where[name]].get_tensor(name)
    except TypeError:
      # numpy has no bfloat16: read the raw bits and reinterpret with ml_dtypes.
      import ml_dtypes

      sl = self._handles[self._where[name]].get_slice(name)
      return np.asarray(sl[...]).view(ml_dtypes.bfloat16)

  def files(self) -> Iterator[Path]:
    for name in self._handles:
      yield self.folder / name
