"""Running ensembles: `solve(ensemble, ...)`, and sweeps that lose nothing.

`solve(ensemble, solver, store="DIR", executor=..., **options)` runs the points
of an `EnsembleProblem` (one point = one value of every axis but `seed`, with
all its seeds) on an executor and returns one `xarray.Dataset`. With `store`,
every finished point is written to disk as it arrives, so that a sweep killed
at any moment (SIGKILL included) and started again with the same command
skips the finished points and ends with the same dataset as an uninterrupted
run.

The store's layout is described in `_store.py`. Why files rather than an index
that lists the finished points: the atomic rename is the commit, so there is no
window in which the index and the files disagree. The combined dataset is always rebuilt from the point files, so an
interrupted-and-resumed sweep and an uninterrupted one give identical bytes of
data.

A store remembers its configuration (problem, data, axes, seeds, master seed,
solver and options, the output function's source, and whether JAX computed in
float64). Running a different
configuration against it raises `SweepConfigError` naming what changed: data
from two configurations are never mixed. Execution settings (executor,
`batch_size`, progress bars) are not part of the configuration.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .._io import coordinate, data_variables, provenance, read_netcdf, write_netcdf
from .._io._provenance import CONVENTIONS, REFERENCES
from .._lazy import xr
from .._solve import RETCODES, SolverError, solve
from ._computation import LOST as LOST_CODE, AbstractComputation, computation_for
from ._executor import AbstractExecutor, InProcess, LostItem
from ._point import lost_point, run_point
from ._problem import EnsembleProblem
from ._store import FORMAT, SweepStore, canonical


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


@solve.register(EnsembleProblem)
def _solve_ensemble(
    ensemble: EnsembleProblem,
    solver: Any = None,
    *,
    store: str | os.PathLike | None = None,
    executor: AbstractExecutor | None = None,
    batch_size: int | str = "auto",
    progress: bool = False,
    member_progress: bool = False,
    keep_failures: bool = False,
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
    - `keep_failures`: return the Dataset even when every member failed (by
      default that raises `SolverError` with the statuses and the first message).
    - `title`: the Dataset's title.

    A failed member does not stop the others: see the `retcode` and `message`
    variables (its values are NaN). Only an ensemble whose every member failed
    raises, unless `keep_failures=True`.
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
    # float64 is part of the identity: points computed in float32 never join a float64 store
    config = {"format": FORMAT, **ensemble.config(), "computation": computation.config(),
              "float64": int(jax.config.jax_enable_x64)}
    points = [{"index": i, "file": f"points/p{i:06d}.nc", "coords": ensemble.point_labels(i)}
              for i in range(ensemble.n_points)]
    executor = executor or InProcess()
    sweep = SweepStore(store, config, points) if store is not None else None
    try:
        ds = _drive(ensemble, computation, config, sweep, executor, batch_size, progress, title)
    finally:
        if sweep is not None:
            sweep.close()
    if not keep_failures:
        _raise_if_all_failed(ds)
    return ds


def _raise_if_all_failed(ds: xr.Dataset) -> None:
    codes = np.ravel(ds["retcode"].values)
    failed = codes[codes != LOST_CODE]
    if failed.size == 0 or np.any(failed == 0):
        return
    counts = {RETCODES[int(c)]: int(np.count_nonzero(failed == c)) for c in np.unique(failed)}
    messages = [m for m in np.ravel(ds["message"].values) if m]
    first = f"; the first message: {messages[0]}" if messages else ""
    raise SolverError(
        f"every member of the ensemble failed (statuses {counts}{first}). The results are "
        "kept in the store if there is one; pass keep_failures=True to get the Dataset "
        "anyway, and see nthdyn.RESULTS for what each status means.")


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
                    result.attrs.update(Conventions=CONVENTIONS, references=REFERENCES,
                                        title=f"point {index} of an nthdyn sweep "
                                              f"(coordinates {ensemble.point_labels(index)})")
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
        ds[name].attrs = coordinate(name, ds[name].values)[2]
    if not {"data", "test"} & set(ensemble.axes):  # the data, once (not per member)
        ds = ds.assign({name: value for name, value in data_variables(ensemble.problem).items()
                        if name not in ds.variables and all(
                            ds.sizes.get(dim, size) == size
                            for dim, size in zip(value[0], np.shape(value[1])))})
    ds.attrs = provenance(title or f"nthdyn ensemble of {type(ensemble.problem).__name__}",
                          config)
    ds.attrs["master_seed"] = ensemble.master_seed
    ds.attrs["config_sha256"] = canonical(config)[1]
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
