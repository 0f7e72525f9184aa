"""Checkpoints <-> penzai: HF safetensors folders, GGUF files, built-in models."""

from jaxprune.converters.builtin import BUILTINS
from jaxprune.converters.loading import LoadedModel, describe, format_description, load_model

__all__ = ["BUILTINS", "LoadedModel", "describe", "format_description", "load_model", "export_hf"]


def export_hf(loaded, out_dir, *, masks=None, overwrite=False, extras=None):
  """Write ``loaded`` (optionally masked, with ``extras`` {file name: text}) as a transformers-loadable HF folder."""
  from jaxprune.converters.export import export_hf as _export

  return _export(loaded, out_dir, masks=masks, overwrite=overwrite, extras=extras)
