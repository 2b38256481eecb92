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
`nthdyn.RESULTS`) with a `message`, and its values are NaN.
"""

from __future__ import annotations

import functools
import hashlib
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._activation import AbstractActivation
from .._io import describe_function, describe_value
from .._problems import AbstractProblem, remake

RESERVED_DIMS = ("time", "sample", "sample_b", "test", "input_dim", "quantile", "member")

#: Bytes of parameters that one vmapped block may hold with `batch_size="auto"`.
AUTO_BATCH_BYTES = 2**30
#: Working memory of one member relative to its parameters (RK stages, gradients).
_WORK_FACTOR = 8

def member_key(seed: int, master_seed: int = 0) -> jax.Array:
    """The initialisation key of ensemble member `seed`:
    `jax.random.fold_in(jax.random.key(master_seed), seed)`."""
    return jax.random.fold_in(jax.random.key(master_seed), seed)


@functools.partial(jax.jit, static_argnums=1)
def _member_keys(seeds: jax.Array, master_seed: int) -> jax.Array:
    return jax.vmap(lambda seed: jax.random.fold_in(jax.random.key(master_seed), seed))(seeds)


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
    if isinstance(value, AbstractActivation):
        return value.name
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
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
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
    names = set(problem.fields())
    if problem.network is not None:
        names |= set(problem.network.hyperparameters())
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
            if isinstance(values, (str, bytes)) or values is not None and not isinstance(
                    values, Iterable):
                raise TypeError(f"{name}s={values!r}: pass a sequence of {name}s, e.g. "
                                f"{name}s=[{values!r}].")
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
        if vmap not in (True, False):
            raise TypeError(f"vmap={vmap!r}: pass True (batch the seeds of a point with "
                            "jax.vmap) or False (compute members one at a time).")
        if seeds is not None:
            _check_seedable(problem)
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

    def keys(self) -> jax.Array:
        """The keys of all seeds, in order (one dispatch: the same keys as `key`)."""
        return _member_keys(jnp.asarray(self.seeds, dtype=jnp.uint32), self.master_seed)

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
        if seed is None or seed not in self.seeds:
            raise ValueError(f"member(seed={seed!r}): pass one of the seeds {list(self.seeds)}.")
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
            "axis_values": {name: [describe_value(v) for v in values]
                            for name, values in self.axes.items()
                            if [describe_value(v) for v in values] != list(self.labels[name])},
            "output": None if self.output is None else describe_function(self.output),
            "vmap": int(self.vmap),
        }


def _check_seedable(problem: AbstractProblem) -> None:
    """Seeds re-draw the network from keys: the network must support `remake(key=...)`."""
    network = problem.network
    try:
        if network is None:
            raise TypeError("there is no network")
        eqx.filter_eval_shape(lambda: network.remake(key=jax.random.key(0)))
    except TypeError:
        raise TypeError(
            f"seeds=...: the network {type(network).__name__} of this "
            f"{type(problem).__name__} cannot be re-initialised from a key; seeds need a "
            "network with hyperparameters such as nthdyn.MLP or nthdyn.JacotMLP (or sweep "
            "networks explicitly with axes={'network': {...}})."
        ) from None


def _check_value(problem: AbstractProblem, name: str, value: Any, index: int) -> None:
    """Check one axis value without building a network (abstract evaluation)."""
    fields = set(problem.fields())
    try:
        if name in fields:
            if name != "network":
                remake(problem, **{name: value})
        else:
            eqx.filter_eval_shape(lambda: problem.network.remake(**{name: value}))
    except (TypeError, ValueError) as error:
        raise type(error)(f"axes[{name!r}][{index}]={value!r} is not a valid {name}: {error}") from None


def point_template(problem: AbstractProblem, point: dict[str, Any]) -> AbstractProblem:
    """The problem at a point, with an *abstract* network (shapes and dtypes, no
    values): every member replaces it by `with_key`, so no network is drawn for
    nothing. Problem fields are changed (and checked) by `remake`."""
    fields = set(problem.fields())
    changes = {name: value for name, value in point.items() if name in fields}
    base = remake(problem, **changes) if changes else problem
    hyper = {name: value for name, value in point.items() if name not in fields}
    # the key is a placeholder: with_key gives each member its own
    abstract = eqx.filter_eval_shape(
        lambda net: net.remake(**hyper, key=jax.random.key(0)), base.network)
    return base.with_network(abstract)


def abstract_parameter_count(network: Any) -> int:
    """The number of floating-point parameters (of a concrete or abstract network)."""
    if network is None:
        return 0
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(network)
               if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct))
               and jnp.issubdtype(leaf.dtype, jnp.inexact))


def with_key(problem: AbstractProblem, key: jax.Array) -> AbstractProblem:
    """`problem` with its network re-initialised from `key` (trace-safe: no input
    checks, so it runs under `vmap`/`jit`; the problem was checked when built)."""
    return problem.with_network(problem.network.remake(key=key))
