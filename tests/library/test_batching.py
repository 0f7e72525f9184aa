"""Continuous batching: a prompt that joins a running batch decodes exactly as it would alone."""

from __future__ import annotations

import numpy as np
import pytest

from jaxprune.evals import generate as gen
from jaxprune.library import batching

PROMPTS = [list(range(5, 25)), list(range(30, 37)), list(range(40, 80)), list(range(3, 12))]


def _alone(model, prompt, budget, temperature=0.0, seed=0):
  config = gen.GenerateConfig(max_new_tokens=budget, chunk=4, temperature=temperature, top_p=0.9, seed=seed)
  return gen.generate_ids(model, [prompt], config)[0][0]


def _run(running, budgets, joiners=(), temperature=0.0):
  """Drive ``running`` to the end, joining each of ``joiners`` (prompt, budget, seed) as soon as a row is free."""
  out = {tag: [] for tag in running.tags if tag is not None}
  waiting = list(joiners)
  while True:
    while waiting and running.fits(len(waiting[0][0]), waiting[0][1]):
      prompt, budget, seed = waiting.pop(0)
      row = running.join(prompt, f"join{len(out)}", seed)
      out[running.tags[row]], budgets[running.tags[row]] = [], budget
    if not running.can_step():
      break
    for row, tokens in running.step().items():
      tag = running.tags[row]
      out[tag].extend(tokens)
      if running.done[row] or len(out[tag]) >= budgets[tag]:
        out[tag] = out[tag][:budgets[tag]]
        running.release(row)
  assert not waiting
  return out


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_joined_rows_decode_as_they_would_alone(tiny_llama, temperature):
  _, loaded = tiny_llama(2)
  config = batching.BatchConfig(rows=2, chunk=4, prompt_multiple=8, temperature=temperature, top_p=0.9)
  running = batching.Running(loaded.model, PROMPTS[:2], ["a", "b"], [8, 16], [1, 2], [], config)
  budgets = {"a": 8, "b": 16}
  out = _run(running, budgets, joiners=[(PROMPTS[3], 12, 4), (PROMPTS[1], 4, 5)], temperature=temperature)
  assert out["a"] == _alone(loaded.model, PROMPTS[0], 8, temperature, seed=1)
  assert out["b"] == _alone(loaded.model, PROMPTS[1], 16, temperature, seed=2)
  assert out["join2"] == _alone(loaded.model, PROMPTS[3], 12, temperature, seed=4)  # joined after 8 steps
  assert out["join3"] == _alone(loaded.model, PROMPTS[1], 4, temperature, seed=5)


def test_a_prompt_joins_only_while_it_fits(tiny_llama):
  _, loaded = tiny_llama(2)
  config = batching.BatchConfig(rows=2, chunk=4, prompt_multiple=8, room=2)
  running = batching.Running(loaded.model, [PROMPTS[1]], ["a"], [8], [0], [], config)
  assert (running.width, running.cache_len, running.end) == (8, 8 + 2 * 8, 8)
  assert not running.fits(len(PROMPTS[2]), 4)  # 40 tokens: longer than the 8 columns written so far
  assert running.fits(8, 16) and not running.fits(8, 17)  # 8 + 16 fills the cache of 24
  with pytest.raises(ValueError, match="does not fit"):
    running.join(PROMPTS[3], "b", 0)  # 9 tokens
  running.join(PROMPTS[1], "b", 0)
  assert running.free_row() is None and not running.fits(1, 1)  # no free row
  running.step()
  running.release(0)
  assert running.fits(9, 12) and not running.fits(9, 13)  # end 12: 12 + 12 = 24


def test_the_cache_stays_within_the_context(tiny_llama):
  _, loaded = tiny_llama(2)
  config = batching.BatchConfig(rows=1, chunk=4, prompt_multiple=8, room=4)
  running = batching.Running(loaded.model, [PROMPTS[0]], ["a"], [20], [0], [], config, max_positions=48)
  assert running.cache_len == 48 and np.all(running.done == [False])
