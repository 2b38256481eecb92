"""The `nthdyn` command.

  nthdyn run [CASE] [--out DIR] [--quick]   run a case (default: quickstart)
  nthdyn run CASE --help                    a case's description and options
  nthdyn cases                              the shipped cases, one line each
  nthdyn info FILE.nc                       summarise a results file
  nthdyn plot FILE.nc [--out PNG]           draw a results file's default figure
"""

from __future__ import annotations

import argparse
import ast
import importlib.resources
import json
import math
import runpy
import sys
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_CASE = "quickstart"


def _version() -> str:
    """The installed distribution's version (no import of the package needed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nthdyn")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from . import __version__

        return __version__


class _VersionAction(argparse.Action):
    """`--version`, looked up only when asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="print the version and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"nthdyn {_version()}")
        parser.exit()


def _shipped() -> dict[str, Path]:
    """The cases shipped with nthdyn (the `cases/` folder), by name."""
    folder = importlib.resources.files("nthdyn._cases")
    paths = (Path(str(p)) for p in folder.iterdir())
    return {p.stem: p for p in sorted(paths)
            if p.suffix == ".py" and not p.name.startswith("_") and p.is_file()}


def _headline(path: Path) -> str:
    """The first line of a case file's docstring, read without running the file."""
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except (OSError, SyntaxError, ValueError) as error:
        return f"(cannot read: {type(error).__name__}: {error})"
    lines = (doc or "").strip().splitlines()
    return lines[0].strip() if lines else "(no description)"


def _cases() -> None:
    shipped = _shipped()
    width = max((len(name) for name in shipped), default=0)
    for name, path in shipped.items():
        print(f"{name:<{width}}  {_headline(path)}")


def _case_path(case: str | None) -> Path:
    """A case file: a path, or the name of a case shipped with nthdyn."""
    if case is not None and (case.endswith(".py") or Path(case).exists()):
        path = Path(case)
        if not path.is_file():
            raise SystemExit(f"nthdyn run: case file {case!r} not found.")
        return path
    name = case or DEFAULT_CASE
    shipped = _shipped()
    if name not in shipped:
        raise SystemExit(f"nthdyn run: no case named {name!r}; shipped cases: {sorted(shipped)}, "
                         "or give a path to a case file.")
    return shipped[name]


def _run(case: str | None, rest: list[str]) -> None:
    from ._case import run_case

    path = _case_path(case)
    namespace = runpy.run_path(str(path), run_name="__nthdyn_case__")
    if "run" not in namespace:
        raise SystemExit(f"nthdyn run: {path} defines no run(out, quick) function.")
    run_case(namespace["run"], namespace.get("__doc__"), rest, name=path.stem,
             prog=f"nthdyn run {case or DEFAULT_CASE}")


def _status_names(code: Any) -> list[str]:
    """The status name of every member of a `retcode` variable: its own CF flags
    first, then nthdyn's codes; never a bare number."""
    import numpy as np

    from ._solve import RETCODES

    names = dict(RETCODES)
    values, meanings = code.attrs.get("flag_values"), code.attrs.get("flag_meanings")
    if values is not None and isinstance(meanings, str):
        names.update(zip((int(v) for v in np.atleast_1d(values).tolist()), meanings.split()))
    result = []
    for value in code.values.ravel().tolist():
        if isinstance(value, (str, bytes)):  # a file that stores codes as text
            value = value.decode() if isinstance(value, bytes) else value
            value = int(value) if value.strip().isdigit() else value
            if isinstance(value, str):
                result.append(value.strip() or "not computed")
                continue
        if isinstance(value, float) and math.isnan(value):
            result.append("not computed")  # NaN: a point missing from a combined file
        elif isinstance(value, (int, float)) and float(value).is_integer():
            result.append(names.get(int(value), f"unknown status (code {int(value)})"))
        else:
            result.append(f"unknown status ({value!r})")
    return result


def _failures(ds: Any, names: list[str], limit: int = 5) -> list[str]:
    """One line per failed member (the first `limit`): where, status, message."""
    import numpy as np

    code = ds["retcode"]
    message = ds["message"] if "message" in ds and ds["message"].dims == code.dims else None
    failed = [i for i, name in enumerate(names) if name != "successful"]
    lines = []
    for i in failed[:limit]:
        index = np.unravel_index(i, code.shape) if code.ndim else ()
        where = ", ".join(
            f"{dim}={code[dim].values[k] if dim in code.coords else k}"
            for dim, k in zip(code.dims, index))
        text = f"    {where + ': ' if where else ''}{names[i]}"
        if message is not None:
            note = message.values[index] if code.ndim else message.values[()]
            note = (note.decode(errors="replace") if isinstance(note, bytes) else str(note)).strip()
            if note:
                text += f": {note.splitlines()[0][:200]}"
        lines.append(text)
    if len(failed) > limit:
        lines.append(f"    ... and {len(failed) - limit} more")
    return lines


def _info(path: str) -> None:
    from ._io import read_netcdf

    try:
        ds = read_netcdf(path)
    except (OSError, ValueError) as error:  # missing, empty, cut short, not NetCDF
        _fail("info", error)
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
        names = _status_names(ds["retcode"])
        counts = {name: names.count(name) for name in sorted(set(names), key=names.index)}
        print(f"  status: {counts}")
        failures = _failures(ds, names)
        if failures:
            print(f"  not successful ({len(names) - counts.get('successful', 0)}):")
            print("\n".join(failures))
    if "config" in ds.attrs:
        config = json.loads(ds.attrs["config"])
        print("  config: " + json.dumps(config, sort_keys=True)[:600])


def _fail(command: str, message: Any) -> NoReturn:
    """One line on stderr, exit status 2 (argparse's for usage errors)."""
    print(f"nthdyn {command}: {message}", file=sys.stderr)
    raise SystemExit(2)


def _plot(file: str, out: str | None, variable: str | None) -> None:
    from ._io import read_netcdf
    from ._plot import DPI, NothingToPlot, figure, png_path

    try:
        ds = read_netcdf(file)
    except (OSError, ValueError) as error:  # missing, empty, cut short, not NetCDF
        _fail("plot", error)
    try:
        fig = figure(ds, file, variable)
    except NothingToPlot as error:
        _fail("plot", error)
    png = png_path(file, out)
    try:
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=DPI)
    except OSError as error:
        _fail("plot", f"cannot write {png}: {error}")
    print(png)


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="nthdyn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", add_help=False, help="run a case (default: the quickstart case)",
        description="Run a case: a shipped one by name (see `nthdyn cases`) or a case file "
                    "by path; without CASE the quickstart case. `nthdyn run CASE --help` shows "
                    "the case's description and its options.")
    run.add_argument("case", nargs="?", metavar="CASE", help="path to a case .py file, or a shipped case name")
    run.add_argument("-h", "--help", action="store_true",
                     help="show this help; with a CASE, that case's description and options")
    run.add_argument("--out", default="out", help="folder for the results (default: ./out)")
    run.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    run.add_argument("--workers", type=int, metavar="N",
                     help="run the case's ensembles on a Dask LocalCluster of N workers")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="run the case's ensembles on the Dask scheduler at ADDRESS")
    commands.add_parser("cases", help="list the shipped cases",
                        description="List the cases shipped with nthdyn: name and headline.")
    info = commands.add_parser("info", help="summarise a results file",
                               description="Summarise a results file: provenance, "
                                           "dimensions, variables, statuses, configuration.")
    info.add_argument("file", metavar="FILE.nc", help="a NetCDF file written by nthdyn")
    plot = commands.add_parser(
        "plot", help="draw a results file's default figure into a PNG",
        description="Draw the default figure of an nthdyn results file: a solve's loss and "
                    "outputs, an ensemble's loss (median over seeds, 10-90% band), a "
                    "comparison's errors; other files: the first float variable, or --variable.")
    plot.add_argument("file", metavar="FILE.nc", help="a NetCDF file written by nthdyn")
    plot.add_argument("--out", metavar="FILE.png",
                      help="the PNG to write (default: next to FILE, same name, .png)")
    plot.add_argument("--variable", metavar="NAME", help="draw this variable instead")
    return parser, run


def main(argv: list[str] | None = None) -> None:
    parser, run_parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.help and args.case is None:
            run_parser.print_help()
            run_parser.exit()
        rest = ["--out", args.out] + (["--quick"] if args.quick else [])
        if args.workers is not None:
            rest += ["--workers", str(args.workers)]
        if args.scheduler is not None:
            rest += ["--scheduler", args.scheduler]
        _run(args.case, ["--help"] if args.help else rest)
    elif args.command == "cases":
        _cases()
    elif args.command == "plot":
        _plot(args.file, args.out, args.variable)
    else:
        _info(args.file)


if __name__ == "__main__":
    main(sys.argv[1:])
