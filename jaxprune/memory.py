"""Measured memory of a pruning run: peak device bytes per device, peak host RSS.

The driver samples after every phase of every block (placing a block,
calibration forward, masks, pruned forward) and keeps the element-wise
maximum (`merge`). A device's bytes are its allocator's peak
(``Device.memory_stats()["peak_bytes_in_use"]``) where the backend reports one
(GPU, TPU), else the sum of the live arrays' shards on it at the sample (CPU),
which misses transients inside a compiled step. Parameter bytes are counted
separately, from the parameter arrays the driver placed (`Watched`), so a test
can bound what the streaming of blocks keeps alive.
"""

from __future__ import annotations

import dataclasses
import resource
import sys
import weakref
from collections.abc import Iterable, Sequence

import jax


@dataclasses.dataclass(frozen=True)
class Peak:
  """Peaks so far, one entry per device (in the order of ``devices``).

  Attributes:
    devices: the sampled devices, as strings.
    device_bytes: the peak device bytes per device.
    parameter_bytes: the peak bytes of live parameter arrays per device.
    source: ``memory_stats`` or ``live_arrays`` (how ``device_bytes`` was measured).
    samples: how many samples were taken.
  """

  devices: tuple[str, ...] = ()
  device_bytes: tuple[int, ...] = ()
  parameter_bytes: tuple[int, ...] = ()
  source: str = ""
  samples: int = 0

  def record(self) -> dict:
    """run.json's ``memory`` entry (with the process's peak host RSS)."""
    return {"peak_device_bytes": dict(zip(self.devices, self.device_bytes)),
            "peak_parameter_bytes": dict(zip(self.devices, self.parameter_bytes)),
            "device_bytes_source": self.source, "samples": self.samples,
            "peak_host_rss_bytes": peak_host_rss()}


def peak_host_rss() -> int:
  """This process's peak resident set size in bytes (ru_maxrss: KiB on Linux, bytes on macOS)."""
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return int(rss if sys.platform == "darwin" else rss * 1024)


class Watched:
  """Weak references to the parameter arrays the driver placed on devices.

  Only what is still alive and not deleted counts, so a block that the driver
  dropped or deleted stops counting, and one that something kept does not.
  """

  def __init__(self):
    self._arrays: weakref.WeakValueDictionary[int, jax.Array] = weakref.WeakValueDictionary()

  def add(self, arrays: Iterable) -> None:
    for a in arrays:
      if isinstance(a, jax.Array):
        self._arrays[id(a)] = a

  def bytes_per_device(self, devices: Sequence) -> tuple[int, ...]:
    return _shard_bytes(list(self._arrays.values()), devices)


def _shard_bytes(arrays: Iterable[jax.Array], devices: Sequence) -> tuple[int, ...]:
  index = {d: i for i, d in enumerate(devices)}
  out = [0] * len(devices)
  for a in arrays:
    if a.is_deleted():
      continue
    for shard in a.addressable_shards:
      if shard.device in index:
        out[index[shard.device]] += shard.data.nbytes
  return tuple(out)


def sample(devices: Sequence, watched: Watched | None = None) -> Peak:
  """The device and parameter bytes of ``devices`` now (one sample)."""
  stats = [d.memory_stats() for d in devices]
  if all(s and "peak_bytes_in_use" in s for s in stats):
    used, source = tuple(int(s["peak_bytes_in_use"]) for s in stats), "memory_stats"
  else:
    used, source = _shard_bytes(jax.live_arrays(), devices), "live_arrays"
  params = watched.bytes_per_device(devices) if watched is not None else (0,) * len(devices)
  return Peak(tuple(map(str, devices)), used, params, source, 1)


def merge(a: Peak, b: Peak) -> Peak:
  """The element-wise maximum of two peaks of the same devices."""
  if not a.samples:
    return b
  return Peak(a.devices, tuple(map(max, a.device_bytes, b.device_bytes)),
              tuple(map(max, a.parameter_bytes, b.parameter_bytes)), b.source, a.samples + b.samples)
