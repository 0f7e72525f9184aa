"""Mask pictures: honest downsampling, the difference panel, offline HTML."""

from __future__ import annotations

import re

import numpy as np
import pytest
import treescope.lowering

from jaxprune.compare import viz
from jaxprune.errors import JaxpruneError
from tests import chromium

NAME = "model.layers.0.self_attn.q_proj.weight"


def text_of(figure) -> str:
  return treescope.lowering.render_to_text_as_root(figure.treescope_part)


# --------------------------------------------------------------------------- #
# Downsampling
# --------------------------------------------------------------------------- #

BLOCK_CASES = {
    # name: (mask, factor, expected block means)
    "2x2-blocks": (
        np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 1]], bool), 2,
        np.array([[0.75, 0.0], [1.0, 0.75]]),
    ),
    # Edge blocks hold fewer weights: all-kept must stay 1.0 there, not be
    # diluted by padding.
    "ragged-edges-all-kept": (np.ones((5, 3), bool), 2, np.ones((3, 2))),
    "ragged-edges-last-column": (
        np.array([[0, 0, 1], [0, 0, 1], [0, 0, 0]], bool), 2, np.array([[0.0, 1.0], [0.0, 0.0]]),
    ),
    "factor-1-is-identity": (np.eye(3, dtype=bool), 1, np.eye(3)),
}


@pytest.mark.parametrize("case", list(BLOCK_CASES), ids=list(BLOCK_CASES))
def test_block_mean(case):
  mask, factor, expected = BLOCK_CASES[case]
  np.testing.assert_allclose(np.asarray(viz.block_mean(mask, factor)), expected, atol=1e-7)


FACTOR_CASES = {
    "7b-q_proj": ((4096, 4096), 128, 32),
    "7b-gate_proj": ((11008, 4096), 128, 86),
    "small-no-downsampling": ((12, 20), 128, 1),
    "exactly-fits": ((256, 128), 256, 1),
    "one-over": ((257, 128), 256, 2),
}


@pytest.mark.parametrize("case", list(FACTOR_CASES), ids=list(FACTOR_CASES))
def test_downsample_factor(case):
  shape, max_cells, expected = FACTOR_CASES[case]
  assert viz.downsample_factor(shape, max_cells) == expected
  assert max(-(-s // expected) for s in shape) <= max_cells


def test_downsample_factor_rejects_nonpositive():
  with pytest.raises(JaxpruneError, match="max_cells"):
    viz.downsample_factor((4, 4), 0)


def test_categories():
  a = np.array([[True, True, False, False]])
  b = np.array([[True, False, True, False]])
  # both kept, only A, only B, both pruned
  np.testing.assert_array_equal(np.asarray(viz.categories(a, b)), [[1, 2, 3, 0]])


# --------------------------------------------------------------------------- #
# The figure
# --------------------------------------------------------------------------- #


def test_mask_diff_states_factor_and_distance():
  rng = np.random.default_rng(0)
  a = rng.random((1024, 512)) < 0.5
  b = a.copy()
  b[:, :256] = ~b[:, :256]  # half the columns flipped
  text = text_of(viz.mask_diff({NAME: a}, {NAME: b}, NAME, labels=("py", "java"), max_cells=128))
  assert "downsampled 8x8" in text and "64 weights" in text
  inter, union = int((a & b).sum()), int((a | b).sum())
  assert f"Jaccard distance {1 - inter / union:.4f}" in text
  assert f"{int((a ^ b).sum()):,} weights differ" in text
  assert "py: kept" in text and "java: kept" in text


def test_mask_diff_without_downsampling_says_so():
  a = np.array([[True, False], [False, True]])
  text = text_of(viz.mask_diff({NAME: a}, {NAME: a}, NAME))
  assert "no downsampling" in text
  assert "Jaccard distance 0.0000" in text


ERROR_CASES = {
    "missing-name": (lambda m: ({"other": m}, {NAME: m}), "not in mask set"),
    "shape-mismatch": (lambda m: ({NAME: m}, {NAME: m[:, :2]}), "compare masks of one model"),
    "packed-not-bool": (lambda m: ({NAME: np.packbits(m, axis=-1)}, {NAME: m}), "pass bool"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_mask_diff_errors_are_one_line(case):
  build, message = ERROR_CASES[case]
  masks_a, masks_b = build(np.ones((4, 8), bool))
  with pytest.raises(JaxpruneError, match=message) as err:
    viz.mask_diff(masks_a, masks_b, NAME)
  assert "\n" not in str(err.value)


def test_html_is_standalone(tmp_path):
  a = np.array([[True, False, True]])
  path = viz.save_html(viz.mask_diff({NAME: a}, {NAME: ~a}, NAME), tmp_path / "diff.html", "t")
  page = path.read_text()
  assert page.startswith("<!DOCTYPE html>") and "<treescope-container" in page
  assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "fetches something from the network"


# --------------------------------------------------------------------------- #
# In a browser
# --------------------------------------------------------------------------- #


@pytest.mark.browser
def test_mask_diff_draws_in_chromium(tmp_path):
  if chromium.find() is None:
    pytest.skip("chromium is not installed (apt-get install -y chromium)")
  a = np.zeros((12, 20), bool)
  a[:, :10] = True
  b = np.zeros((12, 20), bool)
  b[:, 5:15] = True
  path = viz.save_html(viz.mask_diff({NAME: a}, {NAME: b}, NAME), tmp_path / "diff.html")
  with chromium.Page(path.as_uri(), width=1800, height=1200) as page:
    assert page.wait_for(chromium.TREESCOPE_DRAWN), "treescope arrays never drew"
    image = chromium.pixels(page.screenshot())
    assert not page.exceptions, page.exceptions
  # Kept cells (dark blue) and both difference colours (only A, only B) show.
  assert chromium.count_color(image, viz.KEPT_COLORS[-1]) > 500
  assert chromium.count_color(image, viz.CATEGORY_COLORS[2]) > 100
  assert chromium.count_color(image, viz.CATEGORY_COLORS[3]) > 100
