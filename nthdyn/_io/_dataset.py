"""Solutions as xarray Datasets (CF conventions).

Every variable has `long_name` and `units` (`"1"` for dimensionless, training time
included, so that it is not decoded as a duration) from the registry in
`_variables.py`; status codes carry `flag_values`/`flag_meanings`; the dataset
carries `Conventions`, `title`, `source`, `history`, creation time, dependency
versions and the configuration as a JSON string.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._lazy import xr
from .._solve import Solution
from ._provenance import provenance
from ._variables import attributes, coordinate, variable

_SOLVED = ("f", "dfdt", "loss", "ntk", "f_test", "dfdt_test")


def solution_variables(solution: Solution, lead: tuple[str, ...] = ()) -> dict[str, tuple]:
    """The variables of a (possibly batched) solution: `lead` names its batch axes."""
    labels = solution.problem.labels()
    data_vars = {name: variable(name, value, lead=lead, **labels.get(name, {}))
                 for name in _SOLVED if (value := getattr(solution, name)) is not None}
    data_vars.update({name: variable(name, value, lead=lead, **labels.get(name, {}))
                      for name, value in solution.observables.items()})
    data_vars["retcode"] = (lead, np.asarray(solution.retcode, dtype=np.int32),
                            attributes("retcode"))
    for name, value in solution.stats.items():
        data_vars[name] = (lead, np.asarray(value, dtype=np.int64), attributes(name))
    return data_vars


def data_variables(problem: Any) -> dict[str, tuple]:
    """The training (and test) inputs and labels of a problem."""
    data_vars = {"X": variable("X", problem.data.X), "y": variable("y", problem.data.y)}
    if problem.test is not None:
        data_vars["X_test"] = variable("X_test", problem.test)
    return data_vars


def coordinates(solution: Solution, n: int, n_test: int | None) -> dict[str, tuple]:
    time = "gradient-descent step" if solution.problem.discrete else None
    times = np.asarray(solution.t).reshape(-1, np.shape(solution.t)[-1])[0]  # one for all members
    coords = {"time": coordinate("time", times, long_name=time),
              "sample": coordinate("sample", np.arange(n))}
    if solution.ntk is not None:
        coords["sample_b"] = coordinate("sample_b", np.arange(n))
    if n_test is not None:
        coords["test"] = coordinate("test", np.arange(n_test))
    return coords


def solution_dataset(solution: Solution, *, batch_dims: tuple[str, ...] = ()) -> xr.Dataset:
    """The saved observables, status and statistics of a (possibly batched) solution,
    without the data and provenance (what an ensemble stacks)."""
    lead = tuple(batch_dims)
    if np.ndim(solution.t) != 1 + len(lead):
        raise ValueError(f"to_dataset: the solution has {np.ndim(solution.t) - 1} batch axes; "
                         f"name them with batch_dims (got {lead}).")
    problem = solution.problem
    n = problem.data.X.shape[-2]
    n_test = None if problem.test is None else problem.test.shape[-2]
    return xr.Dataset(solution_variables(solution, lead), coords=coordinates(solution, n, n_test))


def to_dataset(solution: Solution, *, title: str | None = None,
               batch_dims: tuple[str, ...] = ()) -> xr.Dataset:
    """An `xarray.Dataset` of a solution.

    Dimensions `time`, `sample` (training index), `sample_b` (second kernel
    index), `test`, `input_dim`. Variables: `f`, `dfdt`, `loss`, `y`, `X`, and
    when present `ntk`, `f_test`, `X_test`; `retcode` with CF flags; the solver
    statistics. A solution batched by `vmap` needs `batch_dims`, the names of its
    batch axes (e.g. `("seed",)`); its data variables and provenance are left
    out (an ensemble adds its own).
    """
    if not isinstance(solution, Solution):
        raise TypeError(f"to_dataset takes the Solution returned by nthdyn.solve(problem), "
                        f"not {type(solution).__name__}.")
    ds = solution_dataset(solution, batch_dims=batch_dims)
    if batch_dims:
        return ds
    problem = solution.problem
    ds = ds.assign(data_variables(problem))
    config = {**problem.config(), "solver": solution.solver, "options": solution.options,
              "stats": {k: int(v) for k, v in solution.stats.items()}}
    ds.attrs.update(provenance(title or problem.title(), config))
    return ds
