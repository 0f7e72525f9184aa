"""penzai -> Hugging Face: write a folder that transformers loads as is.

Weights are written shard by shard (5 GB shards with an index, as
``save_pretrained`` does), so host memory holds one shard at a time. The folder
is assembled under a hidden name next to the target and renamed at the end
(`jaxprune.outputs`): an interrupted export never leaves a half-written model
behind, and only an earlier export (marked by ``.jaxprune.json``) is replaced.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from penzai import pz

from jaxprune.converters import families
from jaxprune.pruning import masks as masks_lib
from jaxprune.errors import JaxpruneError

log = logging.getLogger(__name__)

MAX_SHARD_SIZE = "5GB"


def hf_state(model, config) -> dict[str, Any]:
  """``{hf_name: array in HF layout}`` of every parameter (lazy per tensor)."""
  layouts = families.layouts(config)
  params = {p.label: p for p in pz.unbind_params(model)[1]}
  state = {}
  for name, (outs, ins) in layouts.items():
    value = params[name].value
    data = value.unwrap(*outs, *ins) if (outs or ins) else value.unwrap()
    state[name] = data.reshape(families.hf_shape((outs, ins)))
  if families.tied(config):
    state.pop("lm_head.weight", None)  # transformers re-ties it to the embedding
  return state


def _write_weights(state: Mapping[str, Any], folder: Path) -> None:
  from huggingface_hub import split_state_dict_into_shards_factory
  from safetensors.numpy import save_file

  split = split_state_dict_into_shards_factory(
      dict(state),
      get_storage_size=lambda a: int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize,
      get_storage_id=lambda a: None,
      filename_pattern="model{suffix}.safetensors",
      max_shard_size=MAX_SHARD_SIZE,
  )
  for filename, names in split.filename_to_tensors.items():
    shard = {name: np.ascontiguousarray(np.asarray(state[name])) for name in names}
    save_file(shard, str(folder / filename), metadata={"format": "pt"})
    del shard
  if split.is_sharded:
    index = {"metadata": {"total_size": sum(
        int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in state.values())},
        "weight_map": split.tensor_to_filename}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _write_config(loaded, folder: Path, dtype) -> None:
  from transformers import GenerationConfig

  config = copy.deepcopy(loaded.config)
  config.dtype = str(np.dtype(dtype)) if np.dtype(dtype) != np.dtype("bfloat16") else "bfloat16"
  config.architectures = [_causal_lm_class(config)]
  config.save_pretrained(str(folder))
  try:
    GenerationConfig.from_model_config(config).save_pretrained(str(folder))
  except Exception as err:  # a config without generation fields still loads
    log.warning("no generation_config.json written (%s)", err)


def _causal_lm_class(config) -> str:
  from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

  return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type, "AutoModelForCausalLM")


def export_hf(loaded, out_dir: str | os.PathLike, *, masks: Mapping[str, Any] | None = None,
              overwrite: bool = False, extras: Mapping[str, str] | None = None) -> Path:
  """Write ``loaded`` (with ``masks`` applied, zeros stored densely) as an HF folder.

  ``extras`` ({file name: text}, e.g. the model card ``README.md``) are written
  into the folder before it is renamed into place.

  Example:
    >>> export_hf(load_model("smollm2-135m"), "out/smollm2-python", masks=masks)
    >>> AutoModelForCausalLM.from_pretrained("out/smollm2-python")
  """
  from jaxprune import outputs

  claim = outputs.claim_dir(out_dir, "export", overwrite=overwrite, inputs=(loaded.source,))
  model = masks_lib.apply(loaded.model, masks) if masks else loaded.model
  tmp = outputs.start(claim)
  try:
    state = hf_state(model, loaded.config)
    dtype = next(iter(state.values())).dtype
    _write_weights(state, tmp)
    _write_config(loaded, tmp, dtype)
    if loaded.tokenizer is not None:
      loaded.tokenizer.save_pretrained(str(tmp))
    for name, text in (extras or {}).items():
      (tmp / Path(name).name).write_text(text, encoding="utf-8")
    marker = {"format": outputs.EXPORT_FORMAT, "model": loaded.source, "dtype": str(dtype)}
    (tmp / outputs.EXPORT_MARKER).write_text(json.dumps(marker, indent=2))
    out = outputs.commit(claim)
  except BaseException:
    outputs.discard(claim)
    raise
  log.info("exported %s to %s", loaded.source, out)
  return out
