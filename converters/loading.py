"""Load a checkpoint (HF folder, GGUF file or built-in name) into penzai.

The loader builds the empty model structure, binds one ``{hf_name: array}``
parameter at a time from a streaming `TensorSource`, then asserts that no slot
is left empty (the pattern of penzai's own converters).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from penzai import pz

from jaxprune.converters import builtin, families
from jaxprune.converters.sources import SafetensorsSource, TensorSource
from jaxprune.errors import JaxpruneError
from jaxprune.model.spec import ModelSpec

log = logging.getLogger(__name__)

# Tensors some checkpoints carry that hold no parameters of the model.
_IGNORABLE_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A penzai model with what is needed to use and export it.

  Attributes:
    model: the penzai `TransformerLM`; parameters are labelled with HF names.
    tokenizer: the transformers tokenizer.
    spec: architecture facts and the prunable linears.
    config: the transformers config object (for export).
    source: where the model came from (path or built-in name).
    content_hash: hash of the checkpoint files' identity (name, size, header).
  """

  model: Any
  tokenizer: Any
  spec: ModelSpec
  config: Any
  source: str
  content_hash: str

  @property
  def model_id(self) -> dict[str, str]:
    return {"id": self.source, "hash": self.content_hash, "family": self.spec.family}


def _file_hash(paths: list[Path]) -> str:
  """A cheap, stable identity of checkpoint files: names, sizes, first/last MiB."""
  h = hashlib.sha256()
  for path in sorted(paths):
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
      h.update(f.read(1 << 20))
      if size > 2 << 20:
        f.seek(-(1 << 20), 2)
        h.update(f.read())
  return h.hexdigest()[:16]


def _resolve(source: str) -> tuple[str, Path]:
  """('hf', folder) or ('gguf', file), with one-line errors for bad paths."""
  if builtin.is_builtin(source):
    return "gguf", builtin.path_of(source)
  path = Path(source).expanduser()
  if not path.exists():
    raise JaxpruneError(
        f"model {source!r} not found: give an HF model folder, a .gguf file, or a built-in name"
        f" ({', '.join(builtin.BUILTINS)})"
    )
  if path.is_file() and path.suffix == ".gguf":
    return "gguf", path
  if path.is_file():
    raise JaxpruneError(f"{path} is a file but not .gguf: give an HF model folder or a .gguf file")
  ggufs = sorted(path.glob("*.gguf"))
  if not (path / "config.json").exists():
    if len(ggufs) == 1:
      return "gguf", ggufs[0]
    raise JaxpruneError(
        f"{path} has no config.json: point --model at an HF model folder (config.json + *.safetensors)"
    )
  return "hf", path


def _load_hf_config(folder: Path):
  from transformers import AutoConfig

  try:
    raw = json.loads((folder / "config.json").read_text())
  except json.JSONDecodeError as err:
    raise JaxpruneError(f"{folder / 'config.json'} is not valid JSON ({err}): fix or re-download it") from None
  model_type = raw.get("model_type")
  if families._ALIASES.get(model_type, model_type) not in families.FAMILIES:  # pylint: disable=protected-access
    raise JaxpruneError(
        f"unsupported architecture {model_type!r} in {folder / 'config.json'}:"
        f" jaxprune supports {', '.join(families.SUPPORTED)}"
    )
  try:
    return AutoConfig.from_pretrained(str(folder))
  except Exception as err:  # transformers raises many types for bad configs
    raise JaxpruneError(f"{folder / 'config.json'} could not be read by transformers ({err})") from None


def _load_tokenizer(folder: Path):
  from transformers import AutoTokenizer

  try:
    return AutoTokenizer.from_pretrained(str(folder))
  except Exception as err:  # a model folder without tokenizer files is usable for pruning
    log.warning("no tokenizer loaded from %s (%s)", folder, err)
    return None


def _default_dtype(config, source: TensorSource):
  dtype = getattr(config, "dtype", None)
  name = str(dtype).replace("torch.", "") if dtype is not None else None
  return {"bfloat16": jnp.bfloat16, "float16": jnp.float16}.get(name, jnp.float32)


PARAMETER_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def parameter_dtype(dtype):
  """The JAX dtype for ``--dtype`` (None: None); only floating dtypes the model runs in."""
  if dtype is None:
    return None
  name = str(dtype).replace("torch.", "")
  name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(name, name)
  if name not in PARAMETER_DTYPES:
    try:
      name = str(jnp.dtype(dtype))
    except TypeError:
      pass
  if name not in PARAMETER_DTYPES:
    raise JaxpruneError(f"--dtype {dtype} is not a parameter dtype: use one of {', '.join(PARAMETER_DTYPES)}")
  return PARAMETER_DTYPES[name]


PARAMS = ("host", "device")


def check_params(params: str) -> str:
  """``--params``: ``host`` (NumPy arrays in host memory) or ``device`` (the default device)."""
  if params not in PARAMS:
    raise JaxpruneError(f"--params {params!r} is not a placement: use host or device")
  return params


def bind(config, source: TensorSource, *, dtype=None, activation_dtype=jnp.float32, params: str = "device"):
  """Build the empty model for ``config`` and fill it from ``source``.

  ``params="host"`` keeps every parameter as a NumPy array in host memory (no
  device copy), bound as frozen `pz.ParameterValue`s; the pruning driver moves
  one block at a time to the devices. ``"device"`` puts each on the default
  device as it is read (mutable `pz.Parameter`s).
  """
  check_params(params)
  param_dtype = jnp.dtype(parameter_dtype(dtype)) if dtype is not None else _default_dtype(config, source)
  skeleton = families.build_skeleton(config, param_dtype, activation_dtype)
  layouts = families.layouts(config)
  available = set(source.names())
  wanted = dict(layouts)
  if families.tied(config) and "lm_head.weight" in wanted:
    alias = {"lm_head.weight": "model.embed_tokens.weight"}
  else:
    alias = {}
  missing = sorted(alias.get(n, n) for n in wanted if alias.get(n, n) not in available)
  if missing:
    raise JaxpruneError(
        f"checkpoint lacks {len(missing)} tensors the config needs (first: {missing[0]}):"
        " the weights do not match config.json; re-export the checkpoint"
    )
  unexpected = sorted(
      n for n in available - {alias.get(w, w) for w in wanted}
      if not n.endswith(_IGNORABLE_SUFFIXES) and not (n == "lm_head.weight" and families.tied(config))
  )
  if unexpected:
    raise JaxpruneError(
        f"checkpoint has {len(unexpected)} tensors the {families.family_name(config)} architecture"
        f" does not use (first: {unexpected[0]}): check config.json's model_type"
    )
  bound, count, values = [], 0, {}
  np_dtype = np.dtype(param_dtype)
  for name, layout in wanted.items():
    stored = alias.get(name, name)
    expected = families.hf_shape(layout)
    if tuple(source.shape(stored)) != expected:
      raise JaxpruneError(
          f"tensor {stored} has shape {tuple(source.shape(stored))} but the config implies {expected}:"
          " the weights do not match config.json"
      )
    outs, ins = layout
    if stored not in values:
      # Reshape and cast on the host, then one transfer: a single device copy
      # per tensor, and the host copy is freed before the next one is read.
      host = np.asarray(source.get(stored)).astype(np_dtype, copy=False)
      host = host.reshape(*outs.values(), *ins.values())
      if params == "host":
        values[stored] = pz.nx.NamedArray(named_axes=collections.OrderedDict(zip((*outs, *ins), host.shape)),
                                            data_array=host)
      else:
        data = jax.device_put(host)
        values[stored] = pz.nx.wrap(data).tag(*outs, *ins)
      del host
      count += int(np.prod(expected))
    # A tied lm_head shares the embedding. Host parameters are frozen values: a
    # `pz.Parameter` would copy its value to the default device.
    kind = pz.ParameterValue if params == "host" else pz.Parameter
    bound.append(kind(value=values[stored], label=name))
    if stored not in alias.values():
      values.pop(stored)
  model = pz.bind_variables(skeleton, bound)
  pz.nn.assert_no_parameter_slots(model)
  return model, count


def load_model(source: str, *, dtype=None, activation_dtype=jnp.float32, params: str = "device") -> LoadedModel:
  """Load ``source`` (HF folder, ``.gguf`` file or built-in name) into penzai.

  ``params``: ``device`` puts the parameters on the default device; ``host``
  keeps them as NumPy arrays in host memory, for models larger than one
  accelerator (`jaxprune.pruning.prune` streams them block by block).

  Example:
    >>> loaded = load_model("smollm2-135m")
    >>> logits = loaded.model(pz.nx.wrap(tokens).tag("batch", "seq"))
  """
  parameter_dtype(dtype)  # refuse a bad --dtype before reading anything
  check_params(params)
  kind, path = _resolve(str(source))
  if kind == "gguf":
    from jaxprune.converters import gguf_io

    config, tensors, tokenizer = gguf_io.open_gguf(path)
    files = [path]
  else:
    config = _load_hf_config(path)
    tensors = SafetensorsSource(path)
    tokenizer = _load_tokenizer(path)
    files = list(tensors.files())
  model, count = bind(config, tensors, dtype=dtype, activation_dtype=activation_dtype, params=params)
  spec = families.model_spec(config, num_parameters=count)
  log.info("loaded %s (%s, %d parameters)", source, spec.family, count)
  return LoadedModel(
      model=model,
      tokenizer=tokenizer,
      spec=spec,
      config=config,
      source=str(source),
      content_hash=_file_hash(files),
  )


def describe(source: str) -> dict[str, Any]:
  """Architecture, parameter count and prunable matrices of a model."""
  loaded = load_model(source)
  spec = loaded.spec
  shapes: dict[str, list[int]] = {}
  for lin in spec.linears_of_block(0):
    shapes[lin.name.split(".", 3)[3]] = list(lin.shape)
  return {
      "source": loaded.source,
      "hash": loaded.content_hash,
      **families.describe_config(loaded.config),
      "parameters": spec.num_parameters,
      "prunable_matrices": len(spec.linears),
      "prunable_parameters": spec.prunable_parameters,
      "per_block_shapes": shapes,
      "max_positions": spec.max_positions,
  }


def format_description(info: dict[str, Any]) -> str:
  lines = [f"{'model':<20} {info['source']}  (hash {info['hash']})"]
  for key in ("family", "layers", "hidden_size", "heads", "kv_heads", "head_dim", "mlp_hidden",
              "vocab_size", "max_positions", "tied_embeddings"):
    lines.append(f"{key:<20} {info[key]}")
  lines.append(f"{'parameters':<20} {info['parameters']:,}")
  lines.append(
      f"{'prunable':<20} {info['prunable_matrices']} matrices, {info['prunable_parameters']:,} weights"
      f" ({info['prunable_parameters'] / info['parameters']:.1%} of all)"
  )
  lines.append("per block (HF shape [out, in]):")
  for name, shape in info["per_block_shapes"].items():
    lines.append(f"  {name:<28} {shape[0]} x {shape[1]}")
  return "\n".join(lines)
