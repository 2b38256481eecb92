"""Ensembles: one problem swept over seeds, widths and any other field.

`EnsembleProblem(problem, seeds=..., widths=..., axes={...})` describes the
grid; `solve(ensemble, solver, **options)` (in `_sweep.py`) runs it and returns
one `xarray.Dataset` with the sweep axes as dimensions.

Vocabulary:

- a *member* is one problem of the grid: `ensemble.member(seed=3, width=512)`;
- a *point* is one value of every axis except `seed`; it holds all seeds, and
  it is the unit of work (executors) and of storage (sweep stores);
- the *computation* is what each member computes: by default "solve with the
  given solver and options, then `to_dataset`", or the user's `output`
  function of the member problem.

Random keys. Member `seed` initialises its network with
`key = fold_in(key(master_seed), seed)`, whatever the batch, the executor or
the order of execution. Changing `width` (or any network hyperparameter) keeps
that key and draws a fresh network of the new shape.

Batching. All seeds of one point share shapes: their networks are built with
`vmap` over the keys and the computation runs under `vmap` (in blocks of
`batch_size` members when memory demands; the blocks are a fixed partition of
the seed list, so a point is always computed the same way). Axes other than
`seed` may change shapes and loop outside.

Failures. A member that fails (the solver stops early, values become
non-finite, the computation raises) does not stop the ensemble: its status is
recorded in the `retcode` variable (CF `flag_values`/`flag_meanings`, see
`ENSEMBLE_RETCODES`) with a `message`, and its values are NaN.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from ._network import AbstractLayeredNetwork
from ._problems import AbstractProblem, GradientFlowProblem, remake
from ._solution import RETCODES, Solution

#: Status of an ensemble member: the solver's codes plus two of the ensemble's.
ENSEMBLE_RETCODES: dict[int, str] = {
    **RETCODES,
    4: "member_error",  # the computation raised; see the member's `message`
    5: "lost",  # the executor lost the point (a worker died); run the sweep again
}
MEMBER_ERROR, LOST = 4, 5

#: Dimension names of solver outputs, which sweep axes may not take.
RESERVED_DIMS = ("time", "sample", "sample_b", "test", "input_dim", "quantile", "member")

#: Bytes of parameters that one vmapped block may hold with `batch_size="auto"`.
AUTO_BATCH_BYTES = 2**30
#: Working memory of one member relative to its parameters (RK stages, gradients).
_WORK_FACTOR = 8

_TRACING_ERRORS = (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError,
                   jax.errors.TracerIntegerConversionError)


def _is_tracing_error(error: BaseException | None) -> bool:
    """Whether `error` (or an error it was raised from) means "this function needs
    concrete values": it cannot be jitted, but it can run under an eager vmap."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, _TRACING_ERRORS):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def member_key(seed: int, master_seed: int = 0) -> jax.Array:
    """The initialisation key of ensemble member `seed`:
    `jax.random.fold_in(jax.random.key(master_seed), seed)`."""
    return jax.random.fold_in(jax.random.key(master_seed), seed)


def _label(value: Any, name: str, index: int) -> Any:
    """A NetCDF-ready coordinate label for an axis value."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (numbers.Integral, np.integer)):
        return int(value)
    if isinstance(value, (numbers.Real, np.floating)):
        return float(value)
    if isinstance(value, str):
        return value
    label = getattr(value, "name", None)
    if isinstance(label, str):
        return label
    raise TypeError(
        f"axes[{name!r}][{index}]={value!r} cannot label a coordinate (numbers, strings "
        f"and activations can). Name the values with a dict: axes={{{name!r}: "
        "{'label_a': value_a, 'label_b': value_b}}."
    )


def _check_seeds(seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        raise TypeError(f"seeds={seeds!r}: pass a sequence of seeds, e.g. seeds=range({seeds}).")
    try:
        seeds = list(seeds)
    except TypeError:
        raise TypeError(f"seeds={seeds!r}: pass a sequence of non-negative integers, "
                        "e.g. seeds=range(16).") from None
    if not seeds:
        raise ValueError("seeds=[]: pass at least one seed, e.g. seeds=range(16).")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
                or not 0 <= seed < 2**32:
            raise ValueError(f"seeds contains {seed!r}: seeds must be integers in [0, 2**32) "
                             "(each member's key is fold_in(key(master_seed), seed)).")
    if len(set(seeds)) != len(seeds):
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        raise ValueError(f"seeds repeats {repeated}: each seed must appear once.")
    return tuple(int(s) for s in seeds)


def _check_axis(name: str, values: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    if isinstance(values, Mapping):
        labels = [_label(label, name, i) for i, label in enumerate(values.keys())]
        values = list(values.values())
    else:
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise TypeError(f"axes[{name!r}]={values!r}: pass a sequence of values, e.g. "
                            f"axes={{{name!r}: [v1, v2]}}.")
        values = list(values)
        labels = [_label(v, name, i) for i, v in enumerate(values)]
    if not values:
        raise ValueError(f"axes[{name!r}] is empty: pass at least one value.")
    if len(set(labels)) != len(labels):
        raise ValueError(
            f"axes[{name!r}] has repeated labels {labels}: each value must appear once "
            "(for objects with equal names, label them with a dict)."
        )
    return tuple(values), tuple(labels)


def _remakeable(problem: AbstractProblem) -> set[str]:
    names = {f.name for f in dataclasses.fields(problem)}
    network = problem.network
    if isinstance(network, AbstractLayeredNetwork):
        names |= set(network.hyperparameters())
    return names


class EnsembleProblem(eqx.Module):
    """A problem swept over seeds, widths and any other field (SciML's
    `EnsembleProblem`). Solve it with `solve(ensemble, solver, **options)`.

    **Arguments:**

    - `problem`: the base problem; each member is a `remake` of it.
    - `seeds`: integer seeds; member `seed` initialises its network with
      `fold_in(key(master_seed), seed)`. `None`: one member, the problem's own
      network (no `seed` dimension).
    - `widths`: hidden widths `m` (shorthand for `axes={"width": widths}`).
    - `orders`: hierarchy orders (shorthand for `axes={"order": orders}`).
    - `axes`: `{name: values}` for any field `remake` can change: problem
      fields (`tspan`, `learning_rate`, `data`, ...) or network hyperparameters
      (`depth`, `activation`, `sw`, ...). Values that are not numbers or strings
      are labelled with a dict: `{"sphere": data1, "circle": data2}`.
    - `master_seed`: the root of every member's key.
    - `output`: what each member computes, a function of the member problem.
      By default a member is solved with the solver and options given to
      `solve` and converted with `to_dataset`. A function returns a dict
      `{name: array}` or `{name: (dims, array)}` or `{name: (dims, array,
      attrs)}`; with `vmap=True` it must be a pure JAX function (it runs
      under `jax.vmap` over seeds). With `vmap=False` it may also return an
      `xarray.Dataset` or a `Solution`.
    - `vmap`: batch the seeds of a point with `jax.vmap` (default). `False`
      computes members one at a time.

    Dimensions of the result: `seed`, `width`, then the other axes in the given
    order, then the computation's own (`time`, `sample`, ...).
    """

    problem: AbstractProblem
    seeds: tuple[int, ...] | None
    axes: dict[str, tuple[Any, ...]]
    labels: dict[str, tuple[Any, ...]]
    master_seed: int
    output: Callable[[AbstractProblem], Any] | None
    vmap: bool

    def __init__(
        self,
        problem: AbstractProblem,
        *,
        seeds: Sequence[int] | None = None,
        widths: Sequence[int] | None = None,
        orders: Sequence[int] | None = None,
        axes: Mapping[str, Any] | None = None,
        master_seed: int = 0,
        output: Callable[[AbstractProblem], Any] | None = None,
        vmap: bool = True,
    ):
        if not isinstance(problem, AbstractProblem):
            raise TypeError(
                f"problem={type(problem).__name__}: pass an nthdyn problem such as "
                "GradientFlowProblem(net, data, tspan=(0.0, 10.0))."
            )
        if axes is not None and not isinstance(axes, Mapping):
            raise TypeError(f"axes={axes!r}: pass a dict {{name: values}}, e.g. "
                            "axes={'depth': [1, 2]}.")
        merged: dict[str, Any] = {}
        for name, values in (("width", widths), ("order", orders)):
            if values is not None:
                merged[name] = values
        for name, values in dict(axes or {}).items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"axes has the key {name!r}: axis names are field names (str).")
            if name in ("seed", "key"):
                raise ValueError(
                    f"axes={{{name!r}: ...}}: seeds are swept with seeds=[...]; each "
                    "member's key derives from master_seed and its seed."
                )
            if name in merged:
                raise ValueError(f"{name!r} is given twice (as {name}s=... and in axes): "
                                 "give it once.")
            merged[name] = values
        known = _remakeable(problem)
        for name in merged:
            if name in RESERVED_DIMS:
                raise ValueError(f"axes[{name!r}]: {name!r} is a dimension of the results; "
                                 "sweep a problem field or network hyperparameter instead.")
            if name not in known:
                raise ValueError(
                    f"axes[{name!r}]: {type(problem).__name__} has no field or network "
                    f"hyperparameter {name!r}; remake can change {sorted(known - {'key'})}."
                )
        checked = {name: _check_axis(name, values) for name, values in merged.items()}
        if isinstance(master_seed, bool) or not isinstance(master_seed, (int, np.integer)) \
                or master_seed < 0:
            raise ValueError(f"master_seed={master_seed!r}: must be an integer >= 0.")
        if output is not None and not callable(output):
            raise TypeError(f"output={output!r}: pass a function of the member problem, "
                            "e.g. output=lambda p: {'K2': nd.ntk_structured(p.network, p.data.X)}.")
        if seeds is not None and not isinstance(problem.network, AbstractLayeredNetwork):
            raise TypeError(
                f"seeds=...: the network {type(problem.network).__name__} cannot be "
                "re-initialised from a key; seeds need an MLP or JacotMLP (or sweep "
                "networks explicitly with axes={'network': {...}})."
            )
        self.problem = problem
        self.seeds = None if seeds is None else _check_seeds(seeds)
        self.axes = {name: values for name, (values, _) in checked.items()}
        self.labels = {name: labels for name, (_, labels) in checked.items()}
        self.master_seed = int(master_seed)
        self.output = output
        self.vmap = bool(vmap)
        for name, values in self.axes.items():
            for i, value in enumerate(values):
                _check_value(problem, name, value, i)

    @property
    def dims(self) -> tuple[str, ...]:
        """The sweep dimensions, in the order of the result."""
        return (("seed",) if self.seeds is not None else ()) + tuple(self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """The sizes of the sweep dimensions."""
        seeds = () if self.seeds is None else (len(self.seeds),)
        return seeds + tuple(len(v) for v in self.axes.values())

    @property
    def n_points(self) -> int:
        return math.prod(len(v) for v in self.axes.values())

    def point(self, index: int) -> dict[str, Any]:
        """The axis values (not seeds) of point `index` (last axis fastest)."""
        indices = np.unravel_index(index, [len(v) for v in self.axes.values()]) if self.axes else ()
        return {name: values[int(i)] for (name, values), i in zip(self.axes.items(), indices)}

    def point_labels(self, index: int) -> dict[str, Any]:
        indices = np.unravel_index(index, [len(v) for v in self.axes.values()]) if self.axes else ()
        return {name: labels[int(i)] for (name, labels), i in zip(self.labels.items(), indices)}

    def key(self, seed: int) -> jax.Array:
        """The initialisation key of member `seed`."""
        return member_key(seed, self.master_seed)

    def member(self, seed: int | None = None, **labels: Any) -> AbstractProblem:
        """The member problem at `seed` and axis labels, e.g.
        `ensemble.member(seed=3, width=512)`: what `solve` computes for it."""
        if set(labels) != set(self.axes):
            raise ValueError(f"member(...) takes one label for each axis {sorted(self.axes)}, "
                             f"got {sorted(labels)}.")
        point = {}
        for name, label in labels.items():
            if label not in self.labels[name]:
                raise ValueError(f"member({name}={label!r}): not on the axis; labels are "
                                 f"{list(self.labels[name])}.")
            point[name] = self.axes[name][self.labels[name].index(label)]
        problem = remake(self.problem, **point) if point else self.problem
        if self.seeds is None:
            if seed is not None:
                raise ValueError("member(seed=...): this ensemble has no seeds.")
            return problem
        if seed is None:
            raise ValueError(f"member(seed=None): pass one of the seeds {list(self.seeds)}.")
        return with_key(problem, self.key(seed))

    def config(self) -> dict[str, Any]:
        """A JSON-ready description (provenance; the sweep store's identity)."""
        data = self.problem.data
        digest = hashlib.sha256()
        for array in (data.X, data.y, self.problem.test):
            if array is not None:
                digest.update(np.ascontiguousarray(np.asarray(array)).tobytes())
        return {
            "ensemble": "EnsembleProblem",
            "problem": self.problem.config(),
            "data_sha256": digest.hexdigest(),
            "seeds": None if self.seeds is None else list(self.seeds),
            "master_seed": self.master_seed,
            "axes": {name: list(labels) for name, labels in self.labels.items()},
            # Values that are not their own labels (activations, data sets, ...).
            "axis_values": {name: [_describe(v) for v in values]
                            for name, values in self.axes.items()
                            if [_describe(v) for v in values] != list(self.labels[name])},
            "output": None if self.output is None else describe_function(self.output),
            "vmap": int(self.vmap),
        }


def _check_value(problem: AbstractProblem, name: str, value: Any, index: int) -> None:
    """Check one axis value without building a network (abstract evaluation)."""
    fields = {f.name for f in dataclasses.fields(problem)}
    try:
        if name in fields:
            if name != "network":
                remake(problem, **{name: value})
        else:
            eqx.filter_eval_shape(lambda: problem.network.remake(**{name: value}))
    except (TypeError, ValueError) as error:
        raise type(error)(f"axes[{name!r}][{index}]={value!r} is not a valid {name}: {error}") from None


def _describe(value: Any) -> Any:
    if isinstance(value, (bool, numbers.Number, str)) or value is None:
        return value
    if isinstance(value, (np.ndarray, jax.Array)):
        return {"array_sha256": hashlib.sha256(np.asarray(value).tobytes()).hexdigest()}
    if isinstance(value, eqx.Module):
        arrays, static = eqx.partition(value, eqx.is_array)
        digest = hashlib.sha256()
        for leaf in jax.tree_util.tree_leaves(arrays):
            digest.update(np.asarray(jax.random.key_data(leaf) if jnp.issubdtype(
                leaf.dtype, jax.dtypes.prng_key) else leaf).tobytes())
        return {"module": eqx.tree_pformat(static, short_arrays=True), "sha256": digest.hexdigest()}
    return repr(value)


def describe_function(function: Callable[..., Any]) -> dict[str, str]:
    """Name and source hash of a function (so a sweep store notices edits). The
    module is left out when it is a script's (`__main__`, or `__nthdyn_case__`
    under `nthdyn run`): the same case file gives the same name either way."""
    name = getattr(function, "__qualname__", repr(function))
    module = getattr(function, "__module__", None) or ""
    if not module.startswith("__"):
        name = f"{module}.{name}"
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        source = repr(function)
    return {"name": name, "source_sha256": hashlib.sha256(source.encode()).hexdigest()}


def point_template(problem: AbstractProblem, point: dict[str, Any]) -> AbstractProblem:
    """The problem at a point, with an *abstract* network (shapes and dtypes, no
    values): every member replaces it by `with_key`, so no network is drawn for
    nothing. Problem fields are changed (and checked) by `remake`."""
    fields = {f.name for f in dataclasses.fields(problem)}
    changes = {name: value for name, value in point.items() if name in fields}
    network = changes.pop("network", problem.network)
    hyper = {name: value for name, value in point.items() if name not in fields}
    abstract = eqx.filter_eval_shape(lambda net: net.remake(**hyper), network)
    return remake(problem, network=abstract, **changes)


def abstract_parameter_count(network: Any) -> int:
    """The number of floating-point parameters (of a concrete or abstract network)."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(network)
               if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact))


def with_key(problem: AbstractProblem, key: jax.Array) -> AbstractProblem:
    """`problem` with its network re-initialised from `key` (trace-safe: no input
    checks, so it runs under `vmap`/`jit`; the problem was checked when built)."""
    return eqx.tree_at(lambda p: p.network, problem, problem.network.remake(key=key))


# --------------------------------------------------------------------------- computations


class AbstractComputation(eqx.Module):
    """What each member computes. `setup` runs once per point on the host;
    `core` is the member's computation (under `vmap` when `batchable`); `finish`
    turns one member's `core` result into a Dataset (no sweep dims) and a status.
    Computations are Modules (compared by value), so compiled batched
    computations are reused across points and calls."""

    def batchable(self) -> bool:
        """Whether `core` is a pure JAX function that may run under `vmap`."""
        return False

    def setup(self, problem: AbstractProblem) -> Any:
        return None

    @abc.abstractmethod
    def core(self, member: AbstractProblem, setup: Any) -> Any: ...

    @abc.abstractmethod
    def finish(self, result: Any, setup: Any) -> tuple[xr.Dataset, int]: ...

    @abc.abstractmethod
    def config(self) -> dict[str, Any]: ...

    def work_factor(self) -> int:
        return _WORK_FACTOR

    def shared_data(self) -> bool:
        """Whether the data variables (`X`, `y`, `X_test`) belong in the result."""
        return False


def _solver_config(solver: Any, options: dict[str, Any]) -> dict[str, Any]:
    from ._io import _json_default

    return {
        "solver": None if solver is None else eqx.tree_pformat(solver, short_arrays=False),
        # Progress meters are execution, not configuration.
        "options": {k: _json_default(v) if isinstance(v, (np.ndarray, jax.Array)) else v
                    for k, v in sorted(options.items()) if k != "progress"},
    }


class SolveFlow(AbstractComputation):
    """Gradient flow of each member, seeds batched with `vmap` (diffrax supports
    batched adaptive solves: each member keeps its own step sizes)."""

    solver: Any
    options: dict[str, Any]

    def batchable(self):
        return True

    def setup(self, problem):
        from ._solve import _check_solver, _flow_settings

        _check_solver(self.solver, abstract_parameter_count(problem.network))

        options = {"saveat": None, "rtol": 1e-10, "atol": 1e-10, "dt0": None,
                   "max_steps": 100_000, "save_ntk": False, "progress": False, **self.options}
        unknown = sorted(set(options) - {"saveat", "rtol", "atol", "dt0", "max_steps",
                                         "save_ntk", "progress"})
        if unknown:
            raise TypeError(f"solve(ensemble, ...) got unknown options {unknown} for a "
                            "GradientFlowProblem; it takes saveat, rtol, atol, dt0, "
                            "max_steps, save_ntk (and member_progress).")
        return _flow_settings(problem, self.solver, **options)

    def core(self, member, setup):
        from ._solve import _flow_integrate

        return member, _flow_integrate(member, setup)

    def finish(self, result, setup):
        from ._io import to_dataset
        from ._solve import _flow_solution

        member, sol = result
        solution = _flow_solution(member, sol, setup, throw=False)
        return member_dataset(to_dataset(solution)), solution.retcode

    def config(self):
        return {"computation": "solve", **_solver_config(self.solver, self.options)}

    def shared_data(self):
        return True


class SolveEach(AbstractComputation):
    """`solve(member, solver, throw=False, **options)` for each member, one at a
    time (problem types without a batched solver)."""

    solver: Any
    options: dict[str, Any]

    def core(self, member, setup):
        from ._solve import solve

        return solve(member, self.solver, throw=False, **self.options)

    def finish(self, result, setup):
        from ._io import to_dataset

        return member_dataset(to_dataset(result)), int(result.retcode)

    def config(self):
        return {"computation": "solve", **_solver_config(self.solver, self.options)}

    def shared_data(self):
        return True


class OutputFunction(AbstractComputation):
    """The user's `output(member) -> dict | Dataset | Solution`."""

    function: Callable[[AbstractProblem], Any]
    vmap: bool

    def batchable(self):
        return self.vmap

    def core(self, member, setup):
        result = self.function(member)
        if self.vmap and (isinstance(result, xr.Dataset) or not isinstance(result, Mapping)):
            raise TypeError(
                f"output={describe_function(self.function)['name']} returned "
                f"{type(result).__name__}; under vmap it must return a dict of arrays "
                "{name: array or (dims, array[, attrs])}. Return a dict, or pass "
                "vmap=False to EnsembleProblem to run members one at a time."
            )
        return result

    def finish(self, result, setup):
        from ._io import to_dataset

        if isinstance(result, Solution):
            return member_dataset(to_dataset(result)), int(result.retcode)
        if isinstance(result, xr.Dataset):
            ds = result
        elif isinstance(result, Mapping):
            ds = xr.Dataset({name: _as_variable(name, value) for name, value in result.items()})
        else:
            raise TypeError(
                f"output={describe_function(self.function)['name']} returned "
                f"{type(result).__name__}: return a dict {{name: array}}, an "
                "xarray.Dataset or a Solution."
            )
        finite = all(bool(np.all(np.isfinite(v.values))) for v in ds.data_vars.values()
                     if v.dtype.kind in "fc")
        return member_dataset(ds), 0 if finite else 2

    def config(self):
        return {"computation": "output", "vmap": int(self.vmap)}  # the function: config "output"

    def work_factor(self):
        return 2


def _as_variable(name: str, value: Any) -> xr.Variable:
    attrs: dict[str, Any] = {}
    if isinstance(value, tuple):
        if len(value) not in (2, 3):
            raise ValueError(f"output[{name!r}]: pass an array, (dims, array) or "
                             "(dims, array, attrs).")
        dims, array = value[0], np.asarray(value[1])
        attrs = dict(value[2]) if len(value) == 3 else {}
        dims = (dims,) if isinstance(dims, str) else tuple(dims)
    else:
        array = np.asarray(value)
        dims = tuple(f"{name}_dim{i}" for i in range(array.ndim))
    attrs.setdefault("long_name", name)
    attrs.setdefault("units", "1")
    return xr.Variable(dims, array, attrs)


def member_dataset(ds: xr.Dataset) -> xr.Dataset:
    """A member's Dataset as it enters an ensemble: the data (the same for every
    member) and the status (recorded by the ensemble) removed, solver statistics
    turned from attributes into variables, attributes dropped."""
    ds = ds.drop_vars([v for v in ("X", "y", "X_test", "retcode") if v in ds.variables])
    ds = ds.drop_dims([d for d in ("input_dim",) if d in ds.dims and not any(
        d in v.dims for v in ds.variables.values())])
    stats = {stat: ((), np.int64(ds.attrs[stat]), {
                "long_name": f"solver statistic {stat.replace('_', ' ')}", "units": "1"})
             for stat in ("num_steps", "num_accepted_steps", "num_rejected_steps")
             if stat in ds.attrs}
    ds = ds.assign(stats) if stats else ds
    ds.attrs = {}
    return ds


def computation_for(ensemble: EnsembleProblem, solver: Any, options: dict[str, Any]
                    ) -> AbstractComputation:
    if ensemble.output is not None:
        if solver is not None or options:
            raise TypeError(
                f"solve(ensemble, solver={solver!r}, {', '.join(options)}): this ensemble "
                "has an output function, which computes each member itself; drop the "
                "solver and options (or call solve inside output)."
            )
        return OutputFunction(ensemble.output, ensemble.vmap)
    if ensemble.vmap and type(ensemble.problem) is GradientFlowProblem:
        return SolveFlow(solver, options)
    return SolveEach(solver, options)


# --------------------------------------------------------------------------- one point


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _to_host(tree: Any) -> Any:
    """Numeric JAX arrays to NumPy, once per block: slicing members out of NumPy
    arrays costs nothing, out of JAX arrays one dispatch per leaf and member.
    (Random keys stay JAX arrays: NumPy has no key dtype.)"""
    def leaf(x):
        if isinstance(x, jax.Array) and not jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return np.asarray(x)
        return x

    return jax.tree_util.tree_map(leaf, tree)


def _take(tree: Any, index: int) -> Any:
    return jax.tree_util.tree_map(lambda x: x[index] if eqx.is_array(x) else x, tree)


def auto_batch_size(problem: AbstractProblem, computation: AbstractComputation,
                    n_seeds: int) -> int:
    member_bytes = abstract_parameter_count(problem.network) * 8 * computation.work_factor()
    return max(1, min(n_seeds, AUTO_BATCH_BYTES // max(member_bytes, 1)))


def _message(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 2000 else text[:2000] + " ..."


def run_point(ensemble: EnsembleProblem, computation: AbstractComputation,
              batch_size: int | str, index: int) -> xr.Dataset:
    """Compute every member of point `index`: the unit of work of an executor.

    Returns a Dataset with a `seed` dimension (when the ensemble has seeds), the
    point's axis labels as scalar coordinates, `retcode` and `message`.
    """
    seeds = ensemble.seeds
    n = 1 if seeds is None else len(seeds)
    results: list[tuple[xr.Dataset | None, int, str]] = [(None, MEMBER_ERROR, "")] * n
    try:
        point = ensemble.point(index)
        if seeds is None:
            problem = remake(ensemble.problem, **point) if point else ensemble.problem
        else:
            problem = point_template(ensemble.problem, point)
        setup = computation.setup(problem)
    except Exception as error:  # the point itself cannot be built: every member fails
        results = [(None, MEMBER_ERROR, _message(error))] * n
    else:
        if seeds is None:
            results = [_single(computation, problem, setup, None)]
        else:
            keys = jnp.stack([ensemble.key(s) for s in seeds])
            if computation.batchable():
                size = (auto_batch_size(problem, computation, n) if batch_size == "auto"
                        else int(batch_size))
                results = _batched(computation, problem, setup, keys, size)
            else:
                results = [_single(computation, problem, setup, key) for key in keys]
    return point_dataset(ensemble, index, results)


def _core(computation, member, setup):
    return computation.core(member, setup)


def _vmapped_core(computation, problem, setup, keys):
    return eqx.filter_vmap(lambda key: computation.core(with_key(problem, key), setup))(keys)


# Module-level jitted functions: compiled once per shape and configuration.
_jit_core = eqx.filter_jit(_core)
_jit_vmapped_core = eqx.filter_jit(_vmapped_core)


def _single(computation, problem, setup, key) -> tuple[xr.Dataset | None, int, str]:
    try:
        member = problem if key is None else with_key(problem, key)
        if computation.batchable():
            try:
                raw = _jit_core(computation, member, setup)
            except Exception as error:
                if not _is_tracing_error(error):
                    raise
                raw = computation.core(member, setup)
        else:
            raw = computation.core(member, setup)
        ds, status = computation.finish(raw, setup)
        return ds, status, ""
    except Exception as error:
        return None, MEMBER_ERROR, _message(error)


def _batched(computation, problem, setup, keys, size) -> list[tuple[xr.Dataset | None, int, str]]:
    batched = _jit_vmapped_core
    results = []
    for block in _blocks(keys.shape[0], size):
        try:
            try:
                raw = batched(computation, problem, setup, keys[block])
            except Exception as error:
                if not _is_tracing_error(error) or batched is _vmapped_core:
                    raise
                # Not jit-able (e.g. input checks on concrete values): vmap eagerly.
                batched = _vmapped_core
                raw = batched(computation, problem, setup, keys[block])
        except Exception:
            # Find which members fail: compute them one at a time.
            results.extend(_single(computation, problem, setup, key) for key in keys[block])
            continue
        raw = _to_host(raw)
        for j in range(block.stop - block.start):
            try:
                ds, status = computation.finish(_take(raw, j), setup)
                results.append((ds, status, ""))
            except Exception as error:
                results.append((None, MEMBER_ERROR, _message(error)))
    return results


def _nan_like(template: xr.Dataset) -> xr.Dataset:
    filled = {}
    for name, var in template.data_vars.items():
        if var.dtype.kind in "fciu":
            filled[name] = xr.full_like(var, np.nan, dtype=float)
        else:
            filled[name] = xr.full_like(var, "", dtype=object)
    return xr.Dataset(filled, coords=template.coords, attrs=template.attrs)


def retcode_variable(codes: Any, dims: tuple[str, ...]) -> tuple:
    return (dims, np.asarray(codes, dtype=np.int32), {
        "long_name": "status of the ensemble member",
        "units": "1",
        "flag_values": np.array(list(ENSEMBLE_RETCODES), dtype=np.int32),
        "flag_meanings": " ".join(ENSEMBLE_RETCODES.values()),
    })


def point_dataset(ensemble: EnsembleProblem, index: int,
                  results: list[tuple[xr.Dataset | None, int, str]]) -> xr.Dataset:
    """Stack the members of one point along `seed`; failed members are NaN."""
    template = next((ds for ds, _, _ in results if ds is not None), None)
    for ds, _, _ in results:
        if ds is not None:
            clash = set(ds.dims) & set(ensemble.dims)
            if clash:
                raise ValueError(f"the member results have dimensions {sorted(clash)}, "
                                 "which are sweep axes: rename them in output.")
    seeded = ensemble.seeds is not None
    member_dims = ("seed",) if seeded else ()
    if template is None:
        ds = xr.Dataset()
    elif seeded:
        members = [d if d is not None else _nan_like(template) for d, _, _ in results]
        try:  # members of one point share coordinates: skip aligning them
            ds = xr.concat(members, dim="seed", data_vars="all", coords="minimal",
                           compat="override", join="override", combine_attrs="override")
        except ValueError:  # members of different sizes (possible with vmap=False)
            ds = xr.concat(members, dim="seed", data_vars="all", coords="minimal",
                           compat="equals", join="outer", combine_attrs="override")
    else:
        ds = template
    if seeded:
        ds = ds.assign_coords(seed=("seed", np.asarray(ensemble.seeds, dtype=np.int64)))
    codes = [status for _, status, _ in results]
    messages = np.array([message for _, _, message in results], dtype=object)
    ds["retcode"] = retcode_variable(codes if seeded else codes[0], member_dims)
    ds["message"] = (member_dims, messages if seeded else messages[0],
                     {"long_name": "error message of a failed member ('' on success)"})
    return ds.assign_coords(ensemble.point_labels(index))


def lost_point(ensemble: EnsembleProblem, index: int, message: str) -> xr.Dataset:
    """The placeholder of a point that the executor could not run."""
    n = 1 if ensemble.seeds is None else len(ensemble.seeds)
    return point_dataset(ensemble, index, [(None, LOST, message)] * n)

