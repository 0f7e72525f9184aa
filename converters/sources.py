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


_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}


def _read_header(path: Path) -> tuple[int, dict]:
  with open(path, "rb") as f:
    (header_len,) = struct.unpack("<Q", f.read(8))
    return 8 + header_len, json.loads(f.read(header_len))


class SafetensorsSource:
  """Tensors of an HF folder: one ``*.safetensors`` file or a sharded index.

  Tensors are read with positioned reads straight into fresh buffers, not
  through a memory map: mapped pages would stay resident next to the copy
  and double the peak memory of a load.
  """

  def __init__(self, folder: str | Path):
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
    self._entries: dict[str, tuple[Path, int, dict]] = {}
    for name in files:
      path = self.folder / name
      if not path.exists():
        raise JaxpruneError(f"{path} is listed in the safetensors index but missing: re-download the checkpoint")
      _check_safetensors_file(path)
      start, header = _read_header(path)
      for key, entry in header.items():
        if key == "__metadata__":
          continue
        if entry.get("dtype") not in _DTYPES:
          raise JaxpruneError(f"{path}: tensor {key} has unsupported dtype {entry.get('dtype')}")
        self._entries[key] = (path, start, entry)
    if weight_map is not None:
      missing = sorted(k for k, f in weight_map.items() if k not in self._entries or self._entries[k][0].name != f)
      if missing:
        raise JaxpruneError(
            f"the safetensors index lists {missing[0]} in a file that lacks it: the checkpoint is corrupt"
        )

  def names(self) -> list[str]:
    return sorted(self._entries)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._entries[name][2]["shape"])

  def dtype(self, name: str) -> str:
    return self._entries[name][2]["dtype"]

  def get(self, name: str) -> np.ndarray:
    import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)

    path, start, entry = self._entries[name]
    dtype = np.dtype(_DTYPES[entry["dtype"]]) if entry["dtype"] != "BF16" else np.dtype(ml_dtypes.bfloat16)
    begin, end = entry["data_offsets"]
    out = np.empty(end - begin, np.uint8)
    with open(path, "rb", buffering=0) as f:
      f.seek(start + begin)
      view = memoryview(out)
      read = 0
      while read < out.size:
        n = f.readinto(view[read:])
        if not n:
          raise JaxpruneError(f"{path} is truncated inside tensor {name}: re-download the checkpoint")
        read += n
    return out.view(dtype).reshape(entry["shape"])

  def files(self) -> Iterator[Path]:
    yield from sorted({path for path, _, _ in self._entries.values()})
