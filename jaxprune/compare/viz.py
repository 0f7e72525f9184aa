"""Pictures of masks: one matrix of two runs side by side, and where they differ.

A 7B model's q_proj has 16.7M weights; treescope draws one square per array
element, so big matrices are downsampled first. Downsampling is honest: each
cell is the *mean* of a square block of ``factor x factor`` weights (the kept
fraction, or the fraction where the two runs differ), colours run over the
fixed range 0..1, and the rendering states the factor. Edge cells average the
weights that exist (fewer than ``factor**2``). At factor 1 every cell is one
weight and the difference panel says which run keeps it.

`mask_diff` returns a treescope figure: in IPython it displays inline; `to_html`
and `save_html` make a standalone page that works offline (treescope inlines
its scripts; nothing is fetched).
"""

from __future__ import annotations

import functools
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import treescope
import treescope.lowering
from treescope import figures

from jaxprune.compare import distances as compare
from jaxprune.pruning import masks as masks_lib
from jaxprune.errors import JaxpruneError

# White -> dark blue for kept fraction; white -> red for "differ" fraction.
KEPT_COLORS = [(255, 255, 255), (33, 102, 172), (8, 29, 88)]
DIFF_COLORS = [(255, 255, 255), (244, 109, 67), (165, 0, 38)]
# Exact (factor 1) difference: a palette indexed by category.
CATEGORIES = ("both pruned", "both kept", "kept only in {a}", "kept only in {b}")
CATEGORY_COLORS = [(255, 255, 255), (200, 200, 200), (33, 102, 172), (230, 97, 1)]

PANEL_PIXELS = 384  # Target width/height of a panel's longest side.


def downsample_factor(shape: Sequence[int], max_cells: int) -> int:
  """Smallest square block side so that no axis has more than ``max_cells`` cells."""
  if max_cells < 1:
    raise JaxpruneError(f"max_cells is {max_cells}: give a positive number of cells per axis, e.g. 128")
  return max(1, math.ceil(max(shape) / max_cells))


@functools.partial(jax.jit, static_argnums=1)
def block_mean(x: jax.Array, factor: int) -> jax.Array:
  """Mean of each ``factor x factor`` block; edge blocks average what exists."""
  out, inp = x.shape
  rows, cols = -(-out // factor), -(-inp // factor)
  padded = jnp.pad(x.astype(jnp.float32), ((0, rows * factor - out), (0, cols * factor - inp)))
  sums = padded.reshape(rows, factor, cols, factor).sum(axis=(1, 3))
  row_n = jnp.minimum(factor, out - jnp.arange(rows) * factor)
  col_n = jnp.minimum(factor, inp - jnp.arange(cols) * factor)
  return sums / (row_n[:, None] * col_n[None, :]).astype(jnp.float32)


@jax.jit
def categories(a: jax.Array, b: jax.Array) -> jax.Array:
  """Index into `CATEGORIES` per weight: 0 both pruned, 1 both kept, 2 only A, 3 only B."""
  both = a & b
  return jnp.where(both, 1, jnp.where(a, 2, jnp.where(b, 3, 0))).astype(jnp.int32)


def _get(masks: Mapping[str, Any], name: str, which: str) -> np.ndarray:
  if name not in masks:
    near = [n for n in masks if name.split(".")[-2:] == n.split(".")[-2:]][:3] or list(masks)[:3]
    raise JaxpruneError(f"matrix {name!r} is not in mask set {which}: choose one of its names, e.g. {', '.join(near)}")
  mask = np.asarray(masks[name])
  if mask.ndim != 2 or mask.dtype != bool:
    raise JaxpruneError(
        f"mask {name} of set {which} is {mask.dtype} {mask.shape}:"
        " pass bool [out, in] masks (masks.load, not load_packed)"
    )
  return mask


def _panel(title: str, array: np.ndarray, note: str, **render_kwargs) -> Any:
  """A titled array picture that sits next to others (inline-block)."""
  pixels = max(1, min(16, PANEL_PIXELS // max(array.shape)))
  picture = treescope.render_array(
      array, rows=[0], columns=[1], pixels_per_cell=pixels, trim_outliers=False,
      maximum_size=array.size, cutoff_size_per_axis=max(array.shape),
      axis_labels={0: "out (rows)", 1: "in (columns)"}, **render_kwargs,
  )
  return figures.styled(
      figures.inline(figures.bolded(title), "\n", note, "\n", picture),
      "display:inline-block; vertical-align:top; margin:0 1.5em 1em 0",
  )


def mask_diff(
    masks_a: Mapping[str, Any],
    masks_b: Mapping[str, Any],
    name: str,
    *,
    labels: tuple[str, str] = ("A", "B"),
    max_cells: int = 128,
) -> Any:
  """Treescope figure of matrix ``name`` in two mask sets and their difference.

  Args:
    masks_a, masks_b: {HF name: bool [out, in]} (True = kept), e.g. `masks.load`.
    name: the matrix, e.g. ``model.layers.12.self_attn.q_proj.weight``.
    labels: what to call the two sets in the picture (run names).
    max_cells: at most this many cells per axis; sets the downsampling factor.
  """
  a, b = _get(masks_a, name, labels[0]), _get(masks_b, name, labels[1])
  if a.shape != b.shape:
    raise JaxpruneError(f"{name} is {a.shape} in {labels[0]} but {b.shape} in {labels[1]}: compare masks of one model")
  factor = downsample_factor(a.shape, max_cells)
  inter, union = compare.overlap_counts(masks_lib.pack(a), masks_lib.pack(b))
  kept_a, kept_b, numel = int(a.sum()), int(b.sum()), a.size
  differ = union - inter

  if factor == 1:
    scale = "no downsampling: each cell is one weight"
    diff_panel = _panel(
        f"difference ({differ:,} weights differ)", np.asarray(categories(a, b)),
        "grey both kept, white both pruned, blue only " + labels[0] + ", orange only " + labels[1],
        continuous=False, colormap=CATEGORY_COLORS, value_item_labels={i: c.format(a=labels[0], b=labels[1]) for i, c in enumerate(CATEGORIES)},
    )
    kept_note = "dark = kept, white = pruned"
  else:
    scale = (f"downsampled {factor}x{factor}: each cell is the mean of a block of"
             f" {factor}x{factor} = {factor * factor:,} weights (edge cells: fewer)")
    diff_panel = _panel(
        f"difference ({differ:,} weights differ)", np.asarray(block_mean(a ^ b, factor)),
        "fraction of the block's weights kept by exactly one run (0 white .. 1 red)",
        continuous=True, around_zero=False, vmin=0.0, vmax=1.0, colormap=DIFF_COLORS,
    )
    kept_note = "fraction of the block's weights kept (0 white .. 1 dark blue)"

  def kept_panel(label: str, mask: np.ndarray, kept: int) -> Any:
    array = mask.astype(np.float32) if factor == 1 else np.asarray(block_mean(mask, factor))
    return _panel(f"{label}: kept {kept / numel:.1%}", array, kept_note,
                  continuous=True, around_zero=False, vmin=0.0, vmax=1.0, colormap=KEPT_COLORS)

  header = (
      f"{a.shape[0]} x {a.shape[1]} = {numel:,} weights; {scale}\n"
      f"Jaccard distance {compare.distance(inter, union):.4f}"
      f" (|A∩B| = {inter:,}, |A∪B| = {union:,}); A = {labels[0]}, B = {labels[1]}"
  )
  panels = figures.inline(kept_panel(labels[0], a, kept_a), kept_panel(labels[1], b, kept_b), diff_panel, wrap=True)
  return figures.inline(figures.bolded(name), "\n", header, "\n\n", panels)


def html_snippet(figure: Any) -> str:
  """The figure as an HTML fragment to embed in a page (self-contained)."""
  # render_to_html would draw the figure *object* (its dataclass repr); the
  # figure's own part is what IPython displays via _repr_html_.
  return treescope.lowering.render_to_html_as_root(figure.treescope_part, compressed=True)


def to_html(figure: Any, title: str = "jaxprune mask diff") -> str:
  """A standalone HTML page of the figure that works offline."""
  return (
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
      f"<title>{html.escape(title)}</title></head>\n<body>\n"
      f"{html_snippet(figure)}\n</body></html>\n"
  )


def save_html(figure: Any, path: str | os.PathLike, title: str = "jaxprune mask diff") -> Path:
  """Write `to_html` to ``path``."""
  path = Path(path)
  path.write_text(to_html(figure, title), encoding="utf-8")
  return path
