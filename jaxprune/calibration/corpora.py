"""Named calibration domains: what real text each is made of, and where it lives.

Code comes from several ordinary projects per language (a single peculiar
corpus, such as libstdc++'s own headers, calibrates badly), prose from Debian
documentation packages. What is not on the machine is fetched into the cache
by ``jaxprune corpora fetch`` (see `jaxprune.calibration.fetching`); a domain that is not
fetched yet raises `NotReady` with the command that fetches it.
"""

from __future__ import annotations

import dataclasses
import functools
import gettext
import json
import logging
import os
import platform
import shutil
import subprocess
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jaxprune.calibration import hfdata
from jaxprune.calibration.documents import Corpus, Group, code_cleaner, list_tree, tree_group, zip_group
from jaxprune.errors import JaxpruneError
from jaxprune.calibration.fetching import NPM_BEFORE, Deb, Npm, cache_root, fetch_item, fetched

log = logging.getLogger(__name__)

FRENCH_CATALOGUES = Path("/usr/share/locale/fr/LC_MESSAGES")


class NotReady(JaxpruneError):
  """A named domain whose text is not on this machine yet; the message says how to get it."""


# --------------------------------------------------------------------------- #
# Named domains
# --------------------------------------------------------------------------- #

_NO_TESTS = frozenset({"test", "tests", "__tests__", "idle_test", "__pycache__"})
_JS_SKIP = _NO_TESTS | {"dist", "build", "umd", "min", "libs", "vendor", "node_modules", "coverage", "benchmark"}

JDK_SOURCE = Deb("openjdk-17-source", "GPL-2.0-only WITH Classpath-exception-2.0")
# group, package, folders inside the package, file name endings ("" = no extension), dirs to skip
CPP_DEBS = (
    ("boost", Deb("libboost1.81-dev", "BSL-1.0"), ("usr/include/boost",), (".hpp", ".h", ".ipp"), {"preprocessed"}),
    ("eigen", Deb("libeigen3-dev", "MPL-2.0"), ("usr/include/eigen3",), ("", ".h"), set()),
    ("abseil", Deb("libabsl-dev", "Apache-2.0"), ("usr/include/absl",), (".h", ".inc"), set()),
    ("poco", Deb("libpoco-dev", "BSL-1.0"), ("usr/include/Poco",), (".h",), set()),
    ("googletest", Deb("googletest", "BSD-3-Clause"), ("usr/src/googletest",), (".cc", ".h"), set()),
    ("fmt", Deb("libfmt-dev", "MIT"), ("usr/include/fmt",), (".h",), set()),
    ("nlohmann-json", Deb("nlohmann-json3-dev", "MIT"),
     ("usr/include/nlohmann", "usr/share/doc/nlohmann-json3-dev/examples"), (".hpp", ".cpp"), set()),
)
ENGLISH_DEBS = (
    ("python-docs", Deb("python3.11-doc", "PSF-2.0"), ("usr/share/doc/python3.11/html/_sources",), (".rst.txt",)),
    ("git-docs", Deb("git-doc", "GPL-2.0-only"), ("usr/share/doc/git-doc",), (".txt",)),
)


def _deb_group(name: str, deb: Deb, root: Path, under, suffixes, exclude=frozenset()) -> Group:
  record = fetched(deb, root)
  if record is None:
    raise NotReady(f"{deb.package} is not fetched")
  keys = list_tree(deb.path(root), under=under, suffixes=suffixes, exclude=frozenset(exclude))
  return tree_group(name, deb.path(root), keys, {
      "origin": f"Debian {deb.package} {record['version']}", "licence": deb.licence,
      "deb_sha256": record["deb_sha256"]})


def _python(root: Path) -> Corpus:
  stdlib = Path(sysconfig.get_paths()["stdlib"])
  keys = list_tree(stdlib, suffixes=(".py",), exclude=_NO_TESTS | {"site-packages", "dist-packages"})
  group = tree_group("cpython", stdlib, keys, {
      "origin": f"CPython {platform.python_version()} standard library, tests excluded", "licence": "PSF-2.0"})
  return Corpus("python", (group,), code_cleaner("hash"))


def jdk_src_zip() -> Path | None:
  """The src.zip of the JDK in use ($JAVA_HOME, else the javac on PATH), if it ships one."""
  homes = [os.environ.get("JAVA_HOME")]
  homes += [str(Path(os.path.realpath(w)).parent.parent) for w in (shutil.which("javac"), shutil.which("java")) if w]
  for home in filter(None, homes):
    if (Path(home) / "lib" / "src.zip").is_file():
      return Path(home) / "lib" / "src.zip"
  return None


def _java(root: Path) -> Corpus:
  jdk = jdk_src_zip()
  if jdk is not None:
    where, origin = jdk, f"JDK sources {jdk}"
  else:
    record = fetched(JDK_SOURCE, root)
    if record is None:
      raise NotReady(f"{JDK_SOURCE.package} is not fetched")
    where = JDK_SOURCE.path(root) / "usr/lib/jvm/openjdk-17/lib/src.zip"
    origin = f"Debian {JDK_SOURCE.package} {record['version']} (sha256 {record['deb_sha256']})"
  group = zip_group("openjdk", where, suffixes=(".java",), exclude_prefixes=("jdk.localedata/",),
                    info={"origin": origin + "; generated locale data excluded", "licence": JDK_SOURCE.licence})
  return Corpus("java", (group,), code_cleaner("c"))


@functools.lru_cache(maxsize=1)
def libstdcxx_headers() -> Path | None:
  """The libstdc++ headers of the installed g++ (its major version), else the newest."""
  try:
    major = subprocess.run(["g++", "-dumpversion"], capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    major = ""
  base = Path("/usr/include/c++")
  if major and (base / major.split(".")[0]).is_dir():
    return base / major.split(".")[0]
  found = sorted((p for p in base.glob("*") if p.name.split(".")[0].isdigit()), key=lambda p: int(p.name.split(".")[0]))
  return found[-1] if found else None


def _cpp(root: Path) -> Corpus:
  groups = [_deb_group(name, deb, root, under, suffixes, exclude) for name, deb, under, suffixes, exclude in CPP_DEBS]
  headers = libstdcxx_headers()
  if headers is not None:
    groups.insert(0, tree_group("libstdc++", headers, list_tree(headers), {
        "origin": f"libstdc++ headers of g++ {headers.name}", "licence": "GPL-3.0-or-later WITH GCC-exception-3.1"}))
  return Corpus("cpp", tuple(groups), code_cleaner("c"))


def _npm_licence(package_dir: Path) -> str:
  try:
    return str(json.loads((package_dir / "package.json").read_text()).get("license", "unknown"))
  except (OSError, ValueError):
    return "unknown"


def _javascript(root: Path) -> Corpus:
  npm = Npm()
  record = fetched(npm, root)
  if record is None:
    raise NotReady("the npm packages are not fetched")
  modules = npm.path(root) / "node_modules"
  pinned = [p.rsplit("@", 1)[0] for p in npm.packages]
  suffixes = (".js", ".mjs", ".cjs")

  def listing(top: Path, under=("",), exclude=_JS_SKIP) -> tuple[str, ...]:
    keys = list_tree(top, under=under, suffixes=suffixes, exclude=exclude)
    return tuple(k for k in keys if not k.endswith((".min.js", ".bundle.js")))

  groups = [tree_group(name, modules / name, listing(modules / name),
                       {"origin": f"npm {name}@{spec}", "licence": _npm_licence(modules / name)})
            for name, spec in (p.rsplit("@", 1) for p in npm.packages)]
  deps = sorted(d for d in os.listdir(modules) if not d.startswith(".") and d not in pinned)
  dep_dirs = [f"{d}/{s}" for d in deps for s in (sorted(os.listdir(modules / d)) if d.startswith("@") else [""])]
  keys = listing(modules, dep_dirs, _JS_SKIP - {"node_modules"})
  licences = sorted({_npm_licence(modules / d) for d in dep_dirs})
  groups.append(tree_group("npm-deps", modules, keys, {
      "origin": f"{len(dep_dirs)} npm dependencies of the packages above (resolved as of {NPM_BEFORE})",
      "licence": ", ".join(licences)}))
  return Corpus("javascript", tuple(groups), code_cleaner("c"))


def _english(root: Path) -> Corpus:
  groups = tuple(_deb_group(name, deb, root, under, suffixes) for name, deb, under, suffixes in ENGLISH_DEBS)
  return Corpus("english", groups)


@functools.lru_cache(maxsize=128)
def catalogue_pairs(path: str, mtime: float) -> tuple[tuple[str, str], ...]:
  """Sorted (English, French) pairs of a gettext catalogue: translated, non-empty, singular forms."""
  del mtime  # cache key only
  with open(path, "rb") as f:
    catalog = gettext.GNUTranslations(f)._catalog  # the parsed .mo; no public accessor
  pairs = set()
  for key, fr in catalog.items():
    en = key[0] if isinstance(key, tuple) else key
    if isinstance(key, tuple) and key[1] != 0:
      continue
    en = en.split("\x04")[-1]  # drop a msgctxt
    if en.strip() and fr.strip() and en != fr:
      pairs.add((en, fr))
  return tuple(sorted(pairs))


def _catalogue_group(path: Path) -> Group:
  pairs = catalogue_pairs(str(path), path.stat().st_mtime)
  width = len(str(len(pairs)))
  return Group(
      name=path.stem,
      keys=tuple(f"{i:0{width}d}" for i in range(len(pairs))),
      read=lambda key: hfdata.translation_prompt(*pairs[int(key)]),
      unit=lambda key: path.name,  # a catalogue is calibration or held-out as a whole
      size=lambda: path.stat().st_size,
      info={"path": str(path), "pairs": len(pairs), "licence": "that of the package the catalogue belongs to"},
  )


def _local_groups(names: Sequence[str], root: Path) -> list[Group]:
  # Only where the documentation says (the cache's local/ folder, the hub cache), never ./NAME.
  return [hfdata.dataset_group(hfdata.HfSpec(n), root, group_name=n, paths=False)
          for n in names if hfdata.find_local(n, root, paths=False) is not None]


def _translation(root: Path) -> Corpus:
  # symlinked catalogues (iso_639.mo -> iso_639-2.mo) are duplicates
  catalogues = sorted(p for p in FRENCH_CATALOGUES.glob("*.mo") if not p.is_symlink())
  groups = [g for g in map(_catalogue_group, catalogues) if g.keys] + _local_groups(("wmt14", "o_books"), root)
  if not groups:
    raise NotReady(f"no French gettext catalogues in {FRENCH_CATALOGUES} and no local wmt14 or o_books data")
  return Corpus("translation", tuple(groups), info={"format": hfdata.translation_prompt("<en>", "<fr>")})


def _local_only(domain: str, names: tuple[str, ...], what: str) -> Callable[[Path], Corpus]:
  """A domain made only of datasets the user put under ``<cache>/local/<name>``."""

  def build(root: Path) -> Corpus:
    groups = _local_groups(names, root)
    if not groups:
      places = " or ".join(str(root / "local" / n) for n in names)
      raise NotReady(f"no local {what} data: put its JSONL/Parquet files in {places}, or pass hf:PATH")
    return Corpus(domain, tuple(groups))

  return build


_math = _local_only("math", ("gsm8k", "math_qa"), "GSM8K or MathQA")
_csr = _local_only("csr", ("ob_qa", "hellaswag"), "OpenBookQA or HellaSwag")


def _generic(root: Path) -> Corpus:
  groups = _local_groups(("c4",), root)
  if groups:
    return Corpus("generic", tuple(groups))
  corpus = _english(root)
  fallback = f"english (no local C4 in {root / 'local' / 'c4'})"
  return Corpus("generic", corpus.groups, corpus.clean, {"fallback": fallback})


@dataclasses.dataclass(frozen=True)
class Domain:
  """A named domain: its kind, what it is, what to fetch for it, how to list it."""

  name: str
  kind: str
  summary: str
  build: Callable[[Path], Corpus]
  needs: Callable[[Path], tuple[Deb | Npm, ...]] = lambda root: ()


DOMAINS: dict[str, Domain] = {d.name: d for d in (
    Domain("python", "code", "CPython standard library of this interpreter", _python),
    Domain("java", "code", "OpenJDK 17 class library sources", _java,
           lambda root: () if jdk_src_zip() else (JDK_SOURCE,)),
    Domain("cpp", "code", "libstdc++, Boost, Eigen, Abseil, POCO, GoogleTest, fmt, nlohmann-json", _cpp,
           lambda root: tuple(d for _, d, *_ in CPP_DEBS)),
    Domain("javascript", "code", "lodash, three, webpack, express, jquery and their npm dependencies",
           _javascript, lambda root: (Npm(),)),
    Domain("english", "prose", "Python 3.11 and Git documentation sources", _english,
           lambda root: tuple(d for _, d, *_ in ENGLISH_DEBS)),
    Domain("translation", "translation", "English->French gettext catalogues (+ local wmt14/o_books)", _translation),
    Domain("math", "math", "local GSM8K / MathQA data only", _math),
    Domain("csr", "csr", "commonsense reasoning: local OpenBookQA / HellaSwag data only", _csr),
    Domain("generic", "prose", "local C4 data, else english", _generic,
           lambda root: () if hfdata.find_local("c4", root, paths=False) else tuple(d for _, d, *_ in ENGLISH_DEBS)),
)}


def build(name: str, root: Path) -> Corpus:
  """The corpus of a named domain; `NotReady` (with the fix) when it is not on this machine."""
  domain = DOMAINS[name]
  missing = [i for i in domain.needs(root) if fetched(i, root) is None]
  if missing:
    what = ", ".join(i.package if isinstance(i, Deb) else "npm packages" for i in missing)
    raise NotReady(f"the {name} corpus is not fetched ({what}): run `jaxprune corpora fetch {name}`")
  return domain.build(root)


def fetch(names: Sequence[str] = (), cache_dir: str | os.PathLike | None = None,
          report: Callable[[str], Any] = log.info) -> list[dict[str, Any]]:
  """Fetch what the named domains need (all fetchable ones when none are named)."""
  root = cache_root(cache_dir)
  unknown = [n for n in names if n not in DOMAINS]
  if unknown:
    raise JaxpruneError(f"unknown domain {unknown[0]!r}: fetchable domains are {', '.join(DOMAINS)}")
  results = []
  for name in names or list(DOMAINS):
    items = DOMAINS[name].needs(root)
    if not items:
      report(f"{name}: nothing to fetch")
    for item in items:
      label = item.package if isinstance(item, Deb) else f"npm {' '.join(item.packages)}"
      start = time.monotonic()
      record, did = fetch_item(item, root)
      took = time.monotonic() - start
      report(f"{name}: {label} {'fetched' if did else 'already fetched'}"
             + (f" in {took:.1f} s" if did else "") + f" -> {item.path(root)}")
      results.append({"domain": name, "item": label, "fetched": did, "seconds": round(took, 2), **record})
  return results
