"""Running case files: the shared command line of `cases/*.py`.

A case file defines `run(out: Path, quick: bool)` and ends with

    if __name__ == "__main__":
        nthdyn.run_case(run, __doc__)

so that it runs as `python cases/NAME.py [--out DIR] [--quick]` and as
`nthdyn run cases/NAME.py`. `--quick` shrinks the experiment so that the test
suite runs every case end to end.

A case whose `run` also takes a keyword `executor` (`run(out, quick, *,
executor)`) runs its ensembles where `--workers N` (a Dask `LocalCluster` of N
workers) or `--scheduler ADDRESS` (a running Dask scheduler) say; without them
it gets `nthdyn.InProcess()`. Cases without that keyword run as before.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._ensemble import DaskExecutor, InProcess


def case_parser(description: str | None, prog: str | None = None, *,
                distributed: bool = True) -> argparse.ArgumentParser:
    """The command line of a case: `--out`, `--quick`, `--workers`, `--scheduler`.
    With `distributed=False` (a case whose `run` takes no executor) the last two
    are still accepted, so that they fail with a clear message, but not listed."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("out"),
                        help="folder for the NetCDF and PNG files (default: ./out)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings that finish in seconds (used by the tests)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="run ensembles on a Dask LocalCluster of N worker processes"
                        if distributed else argparse.SUPPRESS)
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run ensembles on the Dask scheduler at ADDRESS "
                             "(e.g. tcp://10.0.0.5:8786)" if distributed else argparse.SUPPRESS)
    return parser


# XLA flags for compile-bound runs: no LLVM optimization, and the older elemental
# emitters for fusions, which compile faster than the MLIR fusion emitters.
FAST_COMPILE_FLAGS = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false"}


def compile_for_speed() -> None:
    """Set `FAST_COMPILE_FLAGS` in `XLA_FLAGS` for this process (and its children), each
    unless `XLA_FLAGS` already sets it. Tiny runs (`--quick`, the tests) spend most of
    their time compiling. XLA's backend compilation of a Dopri8 flow solve plus an
    order-4 hierarchy solve (width 32, n = 4) on a 2-core machine: 4.9 s by default,
    3.2 s at `-O0`, 1.9 s at `-O0` without the fusion emitters. Results agree to
    rounding, not bit for bit: transcendental functions differ by a few ulps between
    the settings (`tanh`: up to 7e-16), and a 1e-12 flow solve's outputs by ~1e-15.
    Takes effect only before JAX's first computation."""
    flags = os.environ.get("XLA_FLAGS", "")
    for flag, value in FAST_COMPILE_FLAGS.items():
        if flag not in flags:
            flags = f"{flags} --{flag}={value}".strip()
    os.environ["XLA_FLAGS"] = flags


def _takes_executor(run: Callable[..., Any]) -> bool:
    try:
        return "executor" in inspect.signature(run).parameters
    except (TypeError, ValueError):
        return False


def _executor(args: argparse.Namespace, run: Callable[..., Any], name: str):
    """The executor that `--workers`/`--scheduler` ask for (None: the case's default)."""
    if args.workers is not None and args.scheduler is not None:
        raise SystemExit(f"{name}: give --workers N (a local cluster) or --scheduler "
                         "ADDRESS (a running one), not both.")
    if args.workers is not None and args.workers < 1:
        raise SystemExit(f"{name}: --workers {args.workers}: pass at least 1 worker.")
    distributed = args.workers is not None or args.scheduler is not None
    if not _takes_executor(run):
        if distributed:
            raise SystemExit(f"{name}: this case runs in one process (its run() takes no "
                             "executor); drop --workers/--scheduler.")
        return None
    if args.scheduler is not None:
        return DaskExecutor(address=args.scheduler)
    if args.workers is not None:
        return DaskExecutor(n_workers=args.workers)
    return InProcess()


def run_case(
    run: Callable[[Path, bool], Any],
    description: str | None,
    argv: Sequence[str] | None = None,
    *,
    name: str | None = None,
    prog: str | None = None,
) -> Any:
    """Parse `--out`/`--quick`, run the case, and report how long it took.
    `prog` names the command in `--help` and usage (default: `name`)."""
    import matplotlib

    matplotlib.use("Agg")
    name = name or Path(sys.argv[0]).stem
    parser = case_parser(description, prog=prog or name, distributed=_takes_executor(run))
    args = parser.parse_args(argv)
    if args.quick:
        compile_for_speed()
    headline = (description or name).strip().splitlines()[0]
    print(f"[nthdyn] case {name}{' (quick)' if args.quick else ''}: {headline}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    executor = _executor(args, run, name)
    start = time.perf_counter()
    if executor is None:
        result = run(args.out, args.quick)
    else:
        if not isinstance(executor, InProcess):
            print(f"[nthdyn] ensembles run on {executor.describe()}", flush=True)
        with executor:
            result = run(args.out, args.quick, executor=executor)
    print(f"[nthdyn] case {name} finished in {time.perf_counter() - start:.1f} s; "
          f"results in {args.out}/", flush=True)
    return result
