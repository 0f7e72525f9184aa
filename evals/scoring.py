"""Log-probabilities of given tokens under a penzai model: shared by perplexity and multiple choice.

One jit-compiled pure function scores a fixed-shape batch [batch, seq]; the
model's parameters are arguments (not constants baked into the program), so a
masked model reuses the dense model's compilation. `batches` pads the last
batch with copies of the first row, and callers drop those rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from penzai import pz

from jaxprune.model import attention


def split(model, attention_chunk: int = 128) -> tuple:
  """(structure, frozen parameters) of a penzai model: the arguments of `next_token_logprobs`.

  Scored rows start at position 0 and rise by one per token (right padding
  only), so causal attention may run in query chunks (`jaxprune.model.attention`,
  ``attention_chunk`` queries each; 0 keeps penzai's): the same numbers to
  float32 rounding, with about half the attention work.
  """
  if attention_chunk:
    model = attention.chunk_attention(model, attention_chunk)
  return pz.unbind_params(model, freeze=True)


@jax.jit
def next_token_logprobs(tree_def, params, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
  """log p(tokens[:, t+1] | tokens[:, :t+1]) and whether it is the argmax, both [batch, seq - 1].

  Right padding never changes earlier positions of a causal model, so rows of
  different lengths can share a batch.
  """
  model = pz.bind_variables(tree_def, [p.unfreeze_as_copy() for p in params])
  logits = model(pz.nx.wrap(tokens).tag("batch", "seq")).unwrap("batch", "seq", "vocabulary")
  logits = logits[:, :-1].astype(jnp.float32)
  targets = tokens[:, 1:]
  logprobs = jax.nn.log_softmax(logits, axis=-1)
  chosen = jnp.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
  greedy = jnp.argmax(logits, axis=-1) == targets
  return chosen, greedy


def batches(tokens: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
  """Fixed-shape batches of ``tokens`` [n, seq] and how many rows of each are real."""
  for start in range(0, len(tokens), batch_size):
    part = tokens[start:start + batch_size]
    real = len(part)
    if real < batch_size:
      part = np.concatenate([part, np.repeat(tokens[:1], batch_size - real, axis=0)])
    yield part, real
