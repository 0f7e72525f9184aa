"""scripts/eval_router.py and scripts/bench_serve.py end to end on the tiny library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench_serve  # noqa: E402
import eval_router  # noqa: E402

pytest.importorskip("openai")


def test_eval_router_reads_routed_pass_from_each_systems_results(tiny_library, tmp_path, monkeypatch):
  out = tmp_path / "router.json"
  args = ["--lib", str(tiny_library), "--tasks", "humaneval,humaneval-js", "--limit", "2", "--max-new-tokens", "8",
          "--held-out-windows", "2", "--held-out-seqlen", "64", "--gen-batch-size", "4", "--out", str(out)]
  result = eval_router.main(args)
  assert json.loads(out.read_text())["pass_at_1"] == result["pass_at_1"]
  assert set(result["pass_at_1"]) == {"dense", "python", "java", "routed (classifier)", "routed (perplexity)",
                                      "routed (declared+classifier)"}
  # plain code prompts declare no language: honouring declarations changes nothing
  assert result["routing"]["declared+classifier"]["chosen"] == result["routing"]["classifier"]["chosen"]
  assert result["labels"] == {"python": "python", "java": "java"}
  systems = {p.stem: json.loads(p.read_text())["solved"] for p in (tmp_path / "router-systems").glob("*.json")}
  for router in ("classifier", "perplexity"):
    routing = result["routing"][router]
    assert routing["prompts"]["n"] == 4 and routing["held_out"]["n"] == 4  # 2 windows of each sub-model's source
    for task in ("humaneval", "humaneval-js"):
      chosen = routing["chosen"][task]
      ids = list(systems["dense"][task])
      want = sum(systems[c][task][t] for c, t in zip(chosen, ids)) / len(ids)
      assert result["pass_at_1"][f"routed ({router})"][task] == pytest.approx(want)
      # the JS prompts are labelled javascript, which no sub-model of this library is
      assert task != "humaneval-js" or routing["per_task"][task]["accuracy"] == 0
  mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "router-systems").glob("*.json")}
  eval_router.main(args)  # a rerun reads each system's report instead of generating again
  assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
  assert "routed (classifier)" in eval_router.table(result)

  reports = tmp_path / "dense-reports"  # reports made elsewhere (e.g. the Table IV cells): read, not generated
  reports.mkdir()
  sampling = {"num_samples": 1, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8, "ks": [1]}
  per_problem = {t: {"num_samples": 1, "correct": 1} for t in ("HumanEval/0", "HumanEval/1", "HumanEval/2")}
  (reports / "humaneval.json").write_text(json.dumps({"sampling": sampling, "config": {"chat": False},
                                                      "per_problem": per_problem}))
  (reports / "humaneval-js.json").write_text(json.dumps({"sampling": sampling, "config": {"chat": True},
                                                         "per_problem": per_problem}))  # other settings: unused
  again = eval_router.main([*args[:-1], str(tmp_path / "reuse.json"), "--reuse", f"dense={reports}"])
  assert again["pass_at_1"]["dense"]["humaneval"] == 1.0
  assert again["pass_at_1"]["dense"]["humaneval-js"] == result["pass_at_1"]["dense"]["humaneval-js"]

  only = eval_router.main([*args[:-1], str(tmp_path / "only.json"), "--routing-only", "--work", str(tmp_path / "none")])
  assert only["pass_at_1"] == {} and only["routing"]["classifier"]["chosen"] == result["routing"]["classifier"]["chosen"]
  assert not list((tmp_path / "none").glob("*.json")) and "routed" not in eval_router.table(only)
  assert only["library"] == str(tiny_library)  # outside the working and home folders: as given
  monkeypatch.chdir(tiny_library.parent)
  assert eval_router.main([*args[:-1], "only.json", "--routing-only"])["library"] == tiny_library.name  # no machine path


def test_bench_serve_measures_load_switches_and_routing(tiny_library, tmp_path):
  out = tmp_path / "bench.json"
  result = bench_serve.main(["--lib", str(tiny_library), "--requests", "4", "--concurrency", "1,2",
                             "--max-tokens", "4", "--switches", "3", "--out", str(out)])
  assert json.loads(out.read_text())["load"] == result["load"]
  assert [row["concurrency"] for row in result["load"]] == [1, 2]
  assert all(row["requests"] == 4 and row["requests_per_s"] > 0 and row["p95_s"] >= row["p50_s"]
             for row in result["load"])
  assert result["engine"]["requests"] == 4 + 4 + 4  # warm-up, then each concurrency level
  assert result["switch"]["switches"] == 3 and result["switch"]["p50_s"] > 0
  assert set(result["routing"]) == {"classifier", "perplexity"}
  assert all(r["requests"] == 4 and r["ms_p50"] > 0 for r in result["routing"].values())
  roof = result["roofline"]
  assert set(roof["by_concurrency"]) == {"1", "2"} and roof["bytes_per_weight"] == 4
  one, two = roof["by_concurrency"]["1"], roof["by_concurrency"]["2"]
  assert two["memory_tokens_per_s"] == pytest.approx(2 * one["memory_tokens_per_s"])  # two rows per weight read
  assert one["tokens_per_s"] == min(one["compute_tokens_per_s"], one["memory_tokens_per_s"]) > 0
  for row in result["load"]:
    assert row["batches"] >= 1 and row["compile_s"] >= 0 and row["rows_padded"] >= row["tokens"]
    assert row["tokens_per_s_without_compile"] >= row["tokens_per_s"]
