"""GSM8K 8-shot: exact match of the final number, greedy decoding.

The eight worked exemplars below are our own problems, written in GSM8K's
answer layout (reasoning, then ``#### <number>``). The completion stops at
the next ``Question:``; ``exact_match`` reads the number after ``####``
(lm-eval's strict match), ``exact_match_flexible`` the last number in the
completion. Numbers compare after removing commas, ``$`` and a trailing dot.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jaxprune.evals import data

LAYOUT = "GSM8K rows as JSONL/JSON/Parquet (fields question, answer ending in '#### <number>')"
STOP = ("Question:", "\n\n\n")

EXEMPLARS: tuple[tuple[str, str], ...] = (
    ("A baker makes 4 trays of muffins with 12 muffins on each tray. She sells 30 muffins. How many muffins"
     " does she have left?",
     "She makes 4 * 12 = 48 muffins. After selling 30 she has 48 - 30 = 18 muffins left.\n#### 18"),
    ("Tom reads 15 pages of a book every day. The book has 210 pages. How many days does it take him to"
     " finish the book?",
     "He needs 210 / 15 = 14 days.\n#### 14"),
    ("A bus ticket costs $3 and a train ticket costs $5. Maria buys 4 bus tickets and 2 train tickets. How"
     " much does she spend?",
     "The bus tickets cost 4 * 3 = 12 dollars. The train tickets cost 2 * 5 = 10 dollars. She spends"
     " 12 + 10 = 22 dollars.\n#### 22"),
    ("There are 28 students in a class. Half of them play football, and 5 of the football players also play"
     " chess. How many football players do not play chess?",
     "Half of 28 is 28 / 2 = 14 football players. Of them, 14 - 5 = 9 do not play chess.\n#### 9"),
    ("A garden has 6 rows of tomato plants with 8 plants in each row. Each plant gives 3 tomatoes. How many"
     " tomatoes does the garden give?",
     "There are 6 * 8 = 48 plants. They give 48 * 3 = 144 tomatoes.\n#### 144"),
    ("Sam had $50. He spent $12 on a shirt and twice as much on shoes. How much money does he have left?",
     "The shoes cost 2 * 12 = 24 dollars. He spent 12 + 24 = 36 dollars, so he has 50 - 36 = 14 dollars"
     " left.\n#### 14"),
    ("A water tank holds 120 liters. It is 25% full. How many more liters are needed to fill it?",
     "It holds 120 * 25 / 100 = 30 liters now. It needs 120 - 30 = 90 more liters.\n#### 90"),
    ("Lena walks 2 kilometers to school and 2 kilometers back home each day, 5 days a week. How many"
     " kilometers does she walk in 3 weeks?",
     "Each day she walks 2 + 2 = 4 kilometers. Each week she walks 4 * 5 = 20 kilometers. In 3 weeks she"
     " walks 20 * 3 = 60 kilometers.\n#### 60"),
)

_STRICT = re.compile(r"####\s*(-?[$0-9.,]+)")
_NUMBER = re.compile(r"-?[$0-9.,]*[0-9]+")


def prompt(question: str) -> str:
  """The 8-shot prompt: every exemplar, then the question."""
  shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in EXEMPLARS)
  return f"{shots}Question: {question.strip()}\nAnswer:"


def normalize(number: str) -> str:
  text = number.replace(",", "").replace("$", "").strip().rstrip(".")
  try:
    value = float(text)
  except ValueError:
    return text
  return str(int(value)) if value == int(value) else str(value)


def extract(completion: str) -> tuple[str | None, str | None]:
  """(strict: the number after ``####``, flexible: the last number) of a completion."""
  strict = _STRICT.search(completion)
  numbers = _NUMBER.findall(completion)
  return (normalize(strict.group(1)) if strict else None, normalize(numbers[-1]) if numbers else None)


def gold(answer: str) -> str:
  return normalize(answer.split("####")[-1])


def evaluate(generate: Callable[..., list[list[str]]], rows: Sequence[Mapping[str, Any]], *,
             max_new_tokens: int = 256, keep_samples: bool = True) -> dict[str, Any]:
  """Exact match of ``generate``'s greedy completions (a `codegen.Generate`) on GSM8K rows.

  With ``keep_samples``, ``samples`` holds each row's target, extracted answers and completion.
  """
  start = time.perf_counter()
  completions = generate([prompt(r["question"]) for r in rows], num_samples=1, temperature=0.0, top_p=1.0,
                         max_new_tokens=max_new_tokens, stop=list(STOP))
  strict_hits, flexible_hits, samples = [], [], []
  for row, (completion,) in zip(rows, completions):
    strict, flexible = extract(completion)
    target = gold(row["answer"])
    strict_hits.append(strict == target)
    flexible_hits.append(flexible == target)
    samples.append({"target": target, "strict": strict, "flexible": flexible, "completion": completion})
  n = len(rows)
  report = {"metrics": {"exact_match": sum(strict_hits) / n, "exact_match_flexible": sum(flexible_hits) / n},
            "num_examples": n, "shots": len(EXEMPLARS), "seconds": time.perf_counter() - start}
  return {**report, "samples": samples} if keep_samples else report


def preflight(name: str, config) -> None:
  """The data file exists (before the model loads)."""
  data.locate(name, config.data_path(name), LAYOUT, local=("gsm8k",))


def run_task(loaded, name: str, config, progress) -> dict[str, Any]:
  """The ``gsm8k`` task: test split of a local GSM8K file, greedy, 8 shots."""
  from jaxprune.evals import generate

  rows = data.load_rows(name, config.data_path(name), LAYOUT, ("test",), ("question", "answer"),
                        local=("gsm8k",))[:config.limit]
  sampler = generate.make_generate(loaded, config.generation(), on_batch=progress(name, len(rows)))
  return evaluate(sampler, rows, max_new_tokens=min(config.max_new_tokens, 256), keep_samples=config.samples)
