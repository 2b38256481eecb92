"""Running ensembles: `solve(ensemble, ...)`, and sweeps that lose nothing.

`solve(ensemble, solver, store="DIR", executor=..., **options)` runs the points
of an `EnsembleProblem` (one point = one value of every axis but `seed`, with
all its seeds) on an executor and returns one `xarray.Dataset`. With `store`,
every finished point is written to disk as it arrives, so that a sweep killed
at any moment (SIGKILL included) and started again with the same command
skips the finished points and ends with the same dataset as an uninterrupted
run.

Store layout (one folder):

    sweep.json          the sweep's configuration, its SHA-256 and the list of points
                        (written once, atomically)
    points/p000003.nc   one NetCDF file per finished point, written to a temporary
                        file, fsync'ed and renamed: a point file exists only once it
                        is complete, so its existence is the record that it is done
    log.jsonl           one line per run and per computed point (time, seconds, pid)
    ensemble.nc         the combined result, rewritten at the end of every run
    .lock               held (flock) by the running sweep; released by the kernel
                        when the process dies, however it dies

Why files rather than an index that lists the finished points: the atomic
rename is the commit, so there is no window in which the index and the files
disagree. The combined dataset is always rebuilt from the point files, so an
interrupted-and-resumed sweep and an uninterrupted one give identical bytes of
data.

A store remembers its configuration (problem, data, axes, seeds, master seed,
solver and options, the output function's source). Running a different
configuration against it raises `SweepConfigError` naming what changed: data
from two configurations are never mixed. Execution settings (executor,
`batch_size`, progress bars) are not part of the configuration.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._ensemble import (
    AbstractComputation,
    EnsembleProblem,
    computation_for,
    lost_point,
    run_point,
)
from ._executor import AbstractExecutor, InProcess, LostItem
from ._io import _json_default, provenance, read_netcdf, write_netcdf
from ._solve import solve

FORMAT = "nthdyn-sweep/1"


class SweepConfigError(ValueError):
    """A sweep store holds results of a different configuration."""


def _canonical(config: dict[str, Any]) -> tuple[str, str]:
    text = json.dumps(config, default=_json_default, sort_keys=True, separators=(",", ":"))
    return text, hashlib.sha256(text.encode()).hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _difference(old: dict[str, Any], new: dict[str, Any], limit: int = 8) -> str:
    a, b = _flatten(old), _flatten(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))

    def short(value: Any) -> str:
        text = json.dumps(value, default=str)
        return text if len(text) <= 80 else text[:77] + "..."

    lines = [f"  {k}: stored {short(a.get(k, '<absent>'))}, now {short(b.get(k, '<absent>'))}"
             for k in keys[:limit]]
    if len(keys) > limit:
        lines.append(f"  ... and {len(keys) - limit} more")
    return "\n".join(lines)


class SweepStore:
    """The on-disk store of one sweep (see the module docstring for the layout)."""

    def __init__(self, path: str | os.PathLike, config: dict[str, Any], points: list[dict]):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise SweepConfigError(f"store={str(self.path)!r} is a file: give a folder path "
                                   "for the sweep store.")
        text, digest = _canonical(config)
        index = self.path / "sweep.json"
        if self.path.is_dir() and not index.exists() and any(
                p.name != ".lock" for p in self.path.iterdir()):
            raise SweepConfigError(
                f"store={str(self.path)!r} exists and is not an nthdyn sweep store (no "
                "sweep.json): give a new or empty folder.")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire()
        try:
            if index.exists():
                stored = json.loads(index.read_text())
                if stored.get("format") != FORMAT:
                    raise SweepConfigError(
                        f"store={str(self.path)!r} has format {stored.get('format')!r}; this "
                        f"nthdyn writes {FORMAT!r}. Use a new store folder.")
                if stored["config_sha256"] != digest:
                    raise SweepConfigError(
                        f"store={str(self.path)!r} holds a sweep with a different "
                        f"configuration (SHA-256 {stored['config_sha256'][:12]} stored, "
                        f"{digest[:12]} now). What differs:\n"
                        f"{_difference(stored['config'], json.loads(text))}\n"
                        "Results of two configurations are never mixed: use another store "
                        "path for the new configuration, or delete this store to start over."
                    )
            else:
                self._write_json(index, {
                    "format": FORMAT,
                    "config_sha256": digest,
                    "created": _now(),
                    "config": json.loads(text),
                    "points": points,
                })
            (self.path / "points").mkdir(exist_ok=True)
            for stale in (self.path / "points").glob(".p*.nc.*.part"):
                stale.unlink(missing_ok=True)  # from a writer that was killed
        except BaseException:
            self.close()
            raise
        self.n_points = len(points)
        self.config_sha256 = digest

    def _acquire(self):
        handle = open(self.path / ".lock", "a+")
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (do not run two sweeps on one store)
            return handle
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise SweepConfigError(
                f"store={str(self.path)!r} is in use by another running sweep (pid "
                f"{owner}): wait for it to finish, or use another store path.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @staticmethod
    def _write_json(path: Path, content: dict[str, Any]) -> None:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
        with open(temporary, "w") as stream:
            json.dump(content, stream, indent=1, default=_json_default, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)

    def point_path(self, index: int) -> Path:
        return self.path / "points" / f"p{index:06d}.nc"

    def finished(self) -> set[int]:
        """The points whose files exist (each file is complete: written atomically)."""
        return {i for i in range(self.n_points) if self.point_path(i).exists()}

    def write_point(self, index: int, ds: xr.Dataset) -> None:
        write_netcdf(ds, self.point_path(index))

    def read_point(self, index: int) -> xr.Dataset:
        return read_netcdf(self.point_path(index))

    def log(self, **event: Any) -> None:
        line = json.dumps({"time": _now(), "pid": os.getpid(), **event}, default=_json_default)
        with open(self.path / "log.jsonl", "a") as stream:
            stream.write(line + "\n")

    def history(self) -> list[dict[str, Any]]:
        return read_log(self.path)


def read_log(store: str | os.PathLike) -> list[dict[str, Any]]:
    """The events of a store's `log.jsonl` ("start", "point", "end"; a line cut
    short by a kill is skipped)."""
    events = []
    path = Path(store) / "log.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
    return events


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _run_point_timed(ensemble, computation, batch_size, index):
    start = time.perf_counter()
    ds = run_point(ensemble, computation, batch_size, index)
    ds.attrs["compute_seconds"] = time.perf_counter() - start
    return ds


def _check_run_options(store, executor, batch_size):
    if store is not None and not isinstance(store, (str, os.PathLike)):
        raise TypeError(f"store={store!r}: pass a folder path (str or pathlib.Path), or None "
                        "to keep the results in memory only.")
    if executor is not None and not isinstance(executor, AbstractExecutor):
        raise TypeError(f"executor={executor!r}: pass nthdyn.InProcess() or "
                        "nthdyn.DaskExecutor(...).")
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(
            batch_size, (int, np.integer)) or batch_size < 1):
        raise ValueError(f"batch_size={batch_size!r}: pass 'auto' or an integer >= 1 "
                         "(the number of seeds vmapped together).")


@solve.register
def _solve_ensemble(
    ensemble: EnsembleProblem,
    solver: Any = None,
    *,
    store: str | os.PathLike | None = None,
    executor: AbstractExecutor | None = None,
    batch_size: int | str = "auto",
    progress: bool = False,
    member_progress: bool = False,
    title: str | None = None,
    **options: Any,
) -> xr.Dataset:
    """Solve every member of `ensemble`; return one Dataset with dimensions
    `seed`, `width`, the other axes, then the computation's own.

    **Arguments:**

    - `solver`, `**options`: passed to each member's solve (`saveat`, `rtol`,
      `atol`, `max_steps`, `save_ntk`, ...) when the ensemble has no `output`.
    - `store`: a folder; each finished point is written there at once, and a
      rerun with the same configuration skips finished points. The combined
      result is also written to `store/ensemble.nc`.
    - `executor`: `InProcess()` (default) or `DaskExecutor(...)`.
    - `batch_size`: seeds vmapped together: `"auto"` (all seeds of a point, or
      fewer when their parameters would exceed 1 GiB) or an integer.
    - `progress`: a progress bar over points. `member_progress`: diffrax's
      progress meter inside each solve (for long single solves).
    - `title`: the Dataset's title.

    Failed members do not raise: see the `retcode` and `message` variables.
    """
    _check_run_options(store, executor, batch_size)
    if member_progress:
        if ensemble.output is not None:
            raise TypeError("member_progress=True shows diffrax's progress meter inside each "
                            "solve; this ensemble's output function computes members itself. "
                            "Use progress=True for a bar over points.")
        options["progress"] = True
    computation = computation_for(ensemble, solver, options)
    computation.setup(ensemble.problem)  # bad solvers and options fail here, not per member
    config = {"format": FORMAT, **ensemble.config(), "computation": computation.config()}
    points = [{"index": i, "file": f"points/p{i:06d}.nc", "coords": ensemble.point_labels(i)}
              for i in range(ensemble.n_points)]
    executor = executor or InProcess()
    sweep = SweepStore(store, config, points) if store is not None else None
    try:
        return _drive(ensemble, computation, config, sweep, executor, batch_size,
                      progress, title)
    finally:
        if sweep is not None:
            sweep.close()


def _drive(ensemble: EnsembleProblem, computation: AbstractComputation, config: dict,
           sweep: SweepStore | None, executor: AbstractExecutor, batch_size: Any,
           progress: bool, title: str | None) -> xr.Dataset:
    from tqdm.auto import tqdm

    done = sweep.finished() if sweep is not None else set()
    pending = [i for i in range(ensemble.n_points) if i not in done]
    if sweep is not None:
        sweep.log(event="start", points=ensemble.n_points, finished=len(done),
                  pending=len(pending), executor=executor.describe())
    memory: dict[int, xr.Dataset] = {}
    lost: dict[int, str] = {}
    bar = tqdm(total=ensemble.n_points, initial=len(done), desc="ensemble points",
               unit="point", disable=not progress, dynamic_ncols=True)
    with bar:
        for k, result in executor.map_unordered(
                _run_point_timed, (ensemble, computation, batch_size), pending):
            index = pending[k]
            if isinstance(result, LostItem):
                lost[index] = result.message
            else:
                seconds = result.attrs.pop("compute_seconds", float("nan"))
                if sweep is not None:
                    sweep.write_point(index, result)
                    codes = np.atleast_1d(result["retcode"].values)
                    sweep.log(event="point", index=index, coords=ensemble.point_labels(index),
                              seconds=round(seconds, 3),
                              failed=int(np.count_nonzero(codes)))
                else:
                    memory[index] = result
            bar.update()
    datasets = []
    for i in range(ensemble.n_points):
        if i in lost:
            datasets.append(lost_point(ensemble, i, lost[i]))
        elif sweep is not None:
            datasets.append(sweep.read_point(i))
        else:
            datasets.append(memory[i])
    ds = combine(ensemble, computation, config, datasets, title)
    if sweep is not None:
        write_netcdf(ds, sweep.path / "ensemble.nc")
        sweep.log(event="end", lost=len(lost))
        if lost:
            import warnings

            warnings.warn(f"{len(lost)} point(s) of the sweep were lost by the executor "
                          f"(first: {next(iter(lost.values()))}); run the same command "
                          "again to compute them.", RuntimeWarning, stacklevel=3)
    return ds


def _nested(datasets: list[xr.Dataset], shape: tuple[int, ...]) -> Any:
    if len(shape) == 1:
        return list(datasets)
    step = len(datasets) // shape[0]
    return [_nested(datasets[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


_AXIS_ATTRS = {
    "seed": {"long_name": "seed of the member: network key fold_in(key(master_seed), seed)",
             "units": "1"},
    "width": {"long_name": "hidden width m", "units": "1"},
    "depth": {"long_name": "number of hidden layers H", "units": "1"},
    "order": {"long_name": "truncation order p of the Neural Tangent Hierarchy", "units": "1"},
    "learning_rate": {"long_name": "learning rate eta", "units": "1"},
    "activation": {"long_name": "activation function sigma"},
}


def combine(ensemble: EnsembleProblem, computation: AbstractComputation, config: dict,
            datasets: list[xr.Dataset], title: str | None = None) -> xr.Dataset:
    """One Dataset from the points' Datasets (in point order)."""
    axes = list(ensemble.axes)
    if axes:
        shape = tuple(len(v) for v in ensemble.axes.values())
        ds = xr.combine_nested(_nested(datasets, shape), concat_dim=axes, data_vars="all",
                               coords="different", compat="equals", join="outer",
                               combine_attrs="override")
    else:
        ds = datasets[0]
    ds = ds.transpose(*ensemble.dims, ...)
    ds["message"] = ds["message"].astype(str)
    for name in ensemble.dims:
        ds[name].attrs = dict(_AXIS_ATTRS.get(name, {"long_name": f"sweep axis {name}",
                                                     "units": "1"}))
    if computation.shared_data() and not {"data", "test"} & set(ensemble.axes):
        problem = ensemble.problem
        ds["X"] = (("sample", "input_dim"), np.asarray(problem.data.X),
                   {"long_name": "training input x_a", "units": "1"})
        ds["y"] = (("sample",), np.asarray(problem.data.y),
                   {"long_name": "training label y_a", "units": "1"})
        if problem.test is not None:
            ds["X_test"] = (("test", "input_dim"), np.asarray(problem.test),
                            {"long_name": "test input", "units": "1"})
    ds.attrs = provenance(title or f"nthdyn ensemble of {type(ensemble.problem).__name__}",
                          config)
    ds.attrs["master_seed"] = ensemble.master_seed
    ds.attrs["config_sha256"] = _canonical(config)[1]
    return ds


def open_sweep(store: str | os.PathLike) -> xr.Dataset:
    """The finished points of a sweep store, combined along the sweep axes (a
    look at a sweep that is still running or was stopped). Points not computed
    yet are absent (NaN where the grid needs them)."""
    path = Path(store)
    index = path / "sweep.json"
    if not index.exists():
        raise FileNotFoundError(f"store={str(path)!r} is not a sweep store (no sweep.json).")
    points = json.loads(index.read_text())["points"]
    datasets = []
    for point in points:
        file = path / point["file"]
        if file.exists():
            ds = read_netcdf(file)
            datasets.append(ds.expand_dims(list(point["coords"])) if point["coords"] else ds)
    if not datasets:
        raise FileNotFoundError(f"store={str(path)!r} has no finished point yet.")
    if len(datasets) == 1:
        return datasets[0]
    return xr.combine_by_coords(datasets, data_vars="all", coords="different",
                                compat="equals", join="outer", combine_attrs="override")
