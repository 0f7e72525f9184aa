"""What the commands share: the default model, progress bars, the multi-host flags."""

from __future__ import annotations

import os
import sys


DEFAULT_MODEL = "smollm2-135m"


def progress(total: int, unit: str):
  from tqdm.auto import tqdm

  from jaxprune import distributed

  # A multi-host worker's stderr is its supervisor's pipe: draw when the supervisor's is a terminal.
  shown = False if os.environ.get(distributed.TTY_ENV) else None
  return tqdm(total=total, unit=unit, file=sys.stderr, disable=shown)



def bars(description: str, total: int):
  """A progress bar per task phase; returns update(done so far)."""
  bar = progress(total, "it")
  bar.set_description(description)

  def update(done: int) -> None:
    bar.update(done - bar.n)
    if done >= total:
      bar.close()

  return update



def add_distributed(p) -> None:
  g = p.add_argument_group("multi-host runs (jax.distributed; one process per host, same command)")
  g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                 help="process 0's host and a free port; 'auto' detects SLURM, Open MPI or $JAX_COORDINATOR_ADDRESS")
  g.add_argument("--num-processes", type=int, default=None, help="processes in the run")
  g.add_argument("--process-id", type=int, default=None, help="this process: 0 .. N-1")
  g.add_argument("--init-timeout", type=int, default=300, help="seconds to wait for every process to join")
  g.add_argument("--heartbeat-timeout", type=int, default=60,
                 help="seconds of silence after which a process counts as dead and the others stop")


def distributed_config(args):
  """A `DistributedConfig` if any multi-host flag is given, else None."""
  from jaxprune import distributed

  if args.coordinator is None and args.num_processes is None and args.process_id is None:
    return None
  return distributed.DistributedConfig(
      coordinator=None if args.coordinator == distributed.AUTO else args.coordinator,
      num_processes=args.num_processes, process_id=args.process_id,
      init_timeout_s=args.init_timeout, heartbeat_timeout_s=args.heartbeat_timeout,
  )
