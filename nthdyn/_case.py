"""Running case files: the shared command line of `cases/*.py`.

A case file defines `run(out: Path, quick: bool)` and ends with

    if __name__ == "__main__":
        nthdyn.run_case(run, __doc__)

so that it runs as `python cases/NAME.py [--out DIR] [--quick]` and as
`nthdyn run cases/NAME.py`. `--quick` shrinks the experiment so that the test
suite runs every case end to end.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def case_parser(description: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("out"),
                        help="folder for the NetCDF and PNG files (default: ./out)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings that finish in seconds (used by the tests)")
    return parser


def run_case(
    run: Callable[[Path, bool], Any],
    description: str | None,
    argv: Sequence[str] | None = None,
    *,
    name: str | None = None,
) -> Any:
    """Parse `--out`/`--quick`, run the case, and report how long it took."""
    import matplotlib

    matplotlib.use("Agg")
    name = name or getattr(run, "__module__", "case")
    args = case_parser(description, prog=name).parse_args(argv)
    headline = (description or name).strip().splitlines()[0]
    print(f"[nthdyn] case {name}{' (quick)' if args.quick else ''}: {headline}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = run(args.out, args.quick)
    print(f"[nthdyn] case {name} finished in {time.perf_counter() - start:.1f} s; "
          f"results in {args.out}/", flush=True)
    return result
