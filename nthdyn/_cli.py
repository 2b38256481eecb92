"""The `nthdyn` command: `nthdyn run [CASE]`, `nthdyn info FILE.nc`."""

from __future__ import annotations

import argparse
import importlib.resources
import json
import runpy
import sys
from pathlib import Path

DEFAULT_CASE = "quickstart"


def _case_path(case: str | None) -> Path:
    """A case file: a path, or the name of a case shipped with nthdyn."""
    if case is not None and (case.endswith(".py") or Path(case).exists()):
        path = Path(case)
        if not path.is_file():
            raise SystemExit(f"nthdyn run: case file {case!r} not found.")
        return path
    name = case or DEFAULT_CASE
    shipped = importlib.resources.files("nthdyn._cases")
    path = Path(str(shipped / f"{name}.py"))
    if not path.is_file():
        known = sorted(p.name[:-3] for p in shipped.iterdir()
                       if p.name.endswith(".py") and not p.name.startswith("_"))
        raise SystemExit(f"nthdyn run: no case named {name!r}; shipped cases: {known}, "
                         "or give a path to a case file.")
    return path


def _run(case: str | None, rest: list[str]) -> None:
    from ._case import run_case

    path = _case_path(case)
    namespace = runpy.run_path(str(path), run_name="__nthdyn_case__")
    if "run" not in namespace:
        raise SystemExit(f"nthdyn run: {path} defines no run(out, quick) function.")
    run_case(namespace["run"], namespace.get("__doc__"), rest, name=path.stem)


def _info(path: str) -> None:
    from ._io import read_netcdf
    from ._solve import RETCODES

    ds = read_netcdf(path)
    print(f"{path}: {ds.attrs.get('title', '(no title)')}")
    for key in ("source", "date_created", "command", "jax_backend"):
        if key in ds.attrs:
            print(f"  {key}: {ds.attrs[key]}")
    if ds.attrs.get("float64") == 0:
        print("  WARNING: computed in float32 (JAX x64 was off)")
    print("  dimensions: " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()))
    print("  variables:")
    for name, var in ds.data_vars.items():
        text = f"    {name}{tuple(var.dims)}: {var.attrs.get('long_name', '')}"
        if var.size and var.dtype.kind == "f":
            text += f"  [{float(var.min()):.4g} .. {float(var.max()):.4g}]"
        print(text)
    if "retcode" in ds:
        codes = ds["retcode"].values.ravel()
        counts = {RETCODES.get(int(c), str(c)): int((codes == c).sum()) for c in set(codes.tolist())}
        print(f"  status: {counts}")
    if "config" in ds.attrs:
        config = json.loads(ds.attrs["config"])
        print("  config: " + json.dumps(config, sort_keys=True)[:600])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nthdyn", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run a case (default: the quickstart case)")
    run.add_argument("case", nargs="?", help="path to a case .py file, or a shipped case name")
    run.add_argument("--out", default="out", help="folder for the results (default: ./out)")
    run.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="run the case's ensembles on a Dask LocalCluster of N workers")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="run the case's ensembles on the Dask scheduler at ADDRESS")
    info = commands.add_parser("info", help="summarise a results file")
    info.add_argument("file")
    args = parser.parse_args(argv)
    if args.command == "run":
        rest = ["--out", args.out] + (["--quick"] if args.quick else [])
        if args.workers is not None:
            rest += ["--workers", str(args.workers)]
        if args.scheduler is not None:
            rest += ["--scheduler", args.scheduler]
        _run(args.case, rest)
    else:
        _info(args.file)


if __name__ == "__main__":
    main(sys.argv[1:])
