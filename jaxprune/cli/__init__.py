"""The `jaxprune` command: parses flags and makes one library call per command.

One module per command (`info`, `models`, `prune`, `export`, `eval`, `compare`,
`corpora`, `library` with `serve`; `finetune` lives with its feature), each with
``add(sub)`` declaring its flags and ``run(args)`` turning them into a frozen
config for one library call. Errors in user input (`JaxpruneError`) print as
one line, exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from jaxprune import failures
from jaxprune.cli import compare, corpora, evaluation, export, info, library, models, prune
from jaxprune.errors import JaxpruneError


def _add_finetune(sub) -> None:
  from jaxprune.finetune import cli as finetune_cli  # flags and the library call live with the feature

  finetune_cli.add_parser(sub)


COMMANDS = [info.add, models.add, prune.add, _add_finetune, export.add, compare.add, corpora.add, evaluation.add,
            library.add_library, library.add_serve]


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="jaxprune",
      description="Derive domain-specific sub-models from HF LLMs by Wanda pruning (JAX/penzai).",
  )
  parser.add_argument("-v", "--verbose", action="store_true", help="log more")
  sub = parser.add_subparsers(dest="command", required=True)
  for add in COMMANDS:
    add(sub)
  return parser


def _end(code: int, argv: list[str] | None) -> int:
  """Exit code of a failed command; a program run (``argv`` None) ends at once.

  After a fault, Orbax's and TensorStore's writer threads may still finish
  their callbacks and print tracebacks during interpreter shutdown: the one
  line already said everything, so the program skips the shutdown.
  """
  if argv is None:
    sys.stdout.flush()
    failures.silence_stderr()
    os._exit(code)  # pylint: disable=protected-access
  return code


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)  # to rerun as a supervised worker
  logging.basicConfig(
      level=logging.INFO if args.verbose else logging.WARNING,
      format="%(levelname)s %(name)s: %(message)s",
  )
  if not args.verbose:  # Orbax logs its threads' tracebacks; the error reaches the handler below
    logging.getLogger("absl").setLevel(logging.CRITICAL)
  failures.reset()
  failures.program_run(argv is None)
  previous = failures.handle_sigterm()
  try:
    return int(args.func(args) or 0)
  except JaxpruneError as err:
    failures.report(f"jaxprune {args.command}: error: {err}")
    return 2
  except BrokenPipeError:  # `jaxprune ... | head`
    sys.stderr.close()
    return 0
  except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM
    failures.report(f"jaxprune {args.command}: interrupted; {failures.kept()}")
    return _end(143 if isinstance(err, failures.Terminated) else 130, argv)
  except Exception as err:  # file-system faults, also when Orbax or TensorStore wrap them
    cause = failures.os_error_in(err)
    if cause is None:
      raise
    failures.report(f"jaxprune {args.command}: error: {failures.os_error_line(cause)}")
    return _end(1, argv)
  finally:
    failures.restore_sigterm(previous)
