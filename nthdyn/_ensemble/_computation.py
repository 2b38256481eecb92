"""What each member of an ensemble computes: a solve (any problem type, batched over
seeds with `vmap`), or the user's `output` function of the member problem."""

from __future__ import annotations

import abc
import collections
import hashlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np

from .._io import describe_function, json_default, solution_dataset
from .._kernels import MAX_KERNEL_BYTES
from .._lazy import xr
from .._problems import AbstractProblem, NTHProblem, initial_kernels
from .._solve import RETCODES, Solution, solve
from .._solve._options import check_options
from ._problem import EnsembleProblem, with_key

#: Working memory of one member relative to its parameters (RK stages, gradients).
WORK_FACTOR = 8


class AbstractComputation(eqx.Module):
    """What each member computes. `setup` runs once per point on the host (and
    raises on bad options); `core` is the member's computation (under `vmap` when
    `batchable`); `finish` turns one member's `core` result into a Dataset (no sweep
    dims) and a status, `finish_block` a batch of them into one Dataset with a
    leading `seed` dimension. Computations are Modules (compared by value), so
    compiled batched computations are reused across points and calls."""

    def batchable(self) -> bool:
        """Whether `core` is a pure JAX function that may run under `vmap`."""
        return False

    def setup(self, problem: AbstractProblem) -> Any:
        return None

    @abc.abstractmethod
    def core(self, member: AbstractProblem, setup: Any, shared: Any = None) -> Any:
        """One member's computation; `shared` is its part of `block_inputs`."""

    def block_inputs(self, problem: AbstractProblem, setup: Any, keys: Any) -> Any:
        """Inputs of a block of members computed once and reused across the points of
        a sweep (batched along `keys`); `None` by default."""
        return None

    @abc.abstractmethod
    def finish(self, result: Any, setup: Any) -> tuple[xr.Dataset, int]: ...

    def finish_block(self, result: Any, setup: Any, size: int) -> Any:
        """The `Block` of a batched `core` result (by default one `finish` per member)."""
        host = to_host(result)
        members = []
        for j in range(size):
            try:
                ds, status = self.finish(take(host, j), setup)
                members.append((ds, status, ""))
            except Exception as error:  # the user's output could not be converted
                if not self.user_code():
                    raise
                members.append((None, MEMBER_ERROR, message(error)))
        return stack_members(members)

    @abc.abstractmethod
    def config(self) -> dict[str, Any]: ...

    def user_code(self) -> bool:
        """Whether `core` runs the user's code, whose errors are recorded per member
        (nthdyn's own errors are raised)."""
        return False

    def work_factor(self) -> int:
        return WORK_FACTOR


MEMBER_ERROR = next(code for code, name in RETCODES.items() if name == "member_error")
LOST = next(code for code, name in RETCODES.items() if name == "lost")


class Block(NamedTuple):
    """Members of a point: their Dataset (along `seed` when the ensemble has seeds;
    `None` if none of them produced one), statuses and messages."""

    ds: xr.Dataset | None
    codes: list[int]
    messages: list[str]


def nan_like(template: xr.Dataset) -> xr.Dataset:
    filled = {}
    for name, var in template.data_vars.items():
        if var.dtype.kind in "fciu":
            filled[name] = xr.full_like(var, np.nan, dtype=float)
        else:
            filled[name] = xr.full_like(var, "", dtype=object)
    return xr.Dataset(filled, coords=template.coords, attrs=template.attrs)


def concat_seeds(datasets: list[xr.Dataset]) -> xr.Dataset:
    try:  # members of one point share coordinates: skip aligning them
        return xr.concat(datasets, dim="seed", data_vars="all", coords="minimal",
                         compat="override", join="override", combine_attrs="override")
    except ValueError:  # members of different sizes (possible with vmap=False)
        return xr.concat(datasets, dim="seed", data_vars="all", coords="minimal",
                         compat="equals", join="outer", combine_attrs="override")


def stack_members(results: list[tuple[xr.Dataset | None, int, str]], seeded: bool = True) -> Block:
    """A block from members computed one at a time; failed members are NaN."""
    codes = [code for _, code, _ in results]
    messages = [text for _, _, text in results]
    template = next((ds for ds, _, _ in results if ds is not None), None)
    if template is None:
        return Block(None, codes, messages)
    if not seeded:
        return Block(template, codes, messages)
    members = [ds if ds is not None else nan_like(template) for ds, _, _ in results]
    return Block(concat_seeds(members), codes, messages)


def message(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= 2000 else text[:2000] + " ..."


def to_host(tree: Any) -> Any:
    """Numeric JAX arrays to NumPy, once per block: slicing members out of NumPy
    arrays costs nothing, out of JAX arrays one dispatch per leaf and member.
    (Random keys stay JAX arrays: NumPy has no key dtype.)"""
    def leaf(x):
        if isinstance(x, jax.Array) and not jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key):
            return np.asarray(x)
        return x

    return jax.tree_util.tree_map(leaf, tree)


def take(tree: Any, index: int) -> Any:
    return jax.tree_util.tree_map(lambda x: x[index] if eqx.is_array(x) else x, tree)


def _solver_config(solver: Any, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "solver": None if solver is None else eqx.tree_pformat(solver, short_arrays=False),
        # Progress meters are execution, not configuration.
        "options": {k: json_default(v) if isinstance(v, (np.ndarray, jax.Array)) else v
                    for k, v in sorted(options.items()) if k != "progress"},
    }


class SolveMembers(AbstractComputation):
    """`solve(member, solver, throw=False, **options)` for any problem type; the
    seeds of a point are batched with `vmap` (diffrax keeps each member's own step
    sizes) and their Dataset is built once from the batched arrays.

    A hierarchy swept over orders (`share_order`, the largest order) computes each
    member's kernels once, at the largest order, and every order takes its own from
    them (`solve(..., kernels=...)`): a sweep over orders 2, 3, 4 computes K2 once,
    not three times."""

    solver: Any
    options: dict[str, Any]
    vmap: bool
    share_order: int | None = None

    def batchable(self):
        return self.vmap

    def setup(self, problem):
        if "kernels" in self.options:
            raise TypeError(
                "solve(ensemble, kernels=...): precomputed kernels belong to one network, so "
                "every member would start from the same kernels. Drop kernels=: an ensemble "
                "over orders computes each member's kernels once and shares them.")
        try:
            check_options(problem, {**self.options, "throw": False})
        except TypeError as error:
            raise TypeError(str(error).replace("solve(", "solve(ensemble of ", 1)) from None

    def core(self, member, setup, shared=None):
        options = self.options if shared is None else {**self.options, "kernels": shared}
        return solve(member, self.solver, throw=False, **options)

    def block_inputs(self, problem, setup, keys):
        if self.share_order is None:
            return None
        key = (jax.tree_util.tree_structure((problem.network, problem.data, problem.test)), _digest(problem.data.X, problem.data.y,
               problem.test, jax.random.key_data(keys)), self.share_order)
        if key in _SHARED_KERNELS:
            _SHARED_KERNELS.move_to_end(key)
            return _SHARED_KERNELS[key]
        kernels = _batched_kernels(problem, keys, self.share_order,
                                   self.options.get("max_bytes", MAX_KERNEL_BYTES))
        _SHARED_KERNELS[key] = kernels
        while len(_SHARED_KERNELS) > 1 and sum(
                leaf.nbytes for leaf in jax.tree_util.tree_leaves(_SHARED_KERNELS)) > SHARED_BYTES:
            _SHARED_KERNELS.popitem(last=False)  # least recently used
        return kernels

    def finish(self, result, setup):
        return solution_dataset(result), int(result.retcode)

    def finish_block(self, result, setup, size):
        ds = solution_dataset(result, batch_dims=("seed",))
        return Block(ds, [int(c) for c in np.ravel(result.retcode)], [""] * size)

    def config(self):
        return {"computation": "solve", **_solver_config(self.solver, self.options)}


class OutputFunction(AbstractComputation):
    """The user's `output(member) -> dict | Dataset | Solution`."""

    function: Callable[[AbstractProblem], Any]
    vmap: bool

    def batchable(self):
        return self.vmap

    def user_code(self):
        return True

    def core(self, member, setup, shared=None):
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
        if isinstance(result, Solution):
            return solution_dataset(result), int(result.retcode)
        if isinstance(result, xr.Dataset):
            ds = result.drop_attrs()
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
        return ds, 0 if finite else 2

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


#: Kernels of recent blocks of hierarchy members (see `SolveMembers`), least recently
#: used first, kept up to `SHARED_BYTES` (the points of a sweep over orders come
#: near each other whatever the order of the axes; each process has its own).
_SHARED_KERNELS: collections.OrderedDict[Any, Any] = collections.OrderedDict()
SHARED_BYTES = 2**29


def _digest(*arrays: Any) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        if array is not None:
            digest.update(np.ascontiguousarray(np.asarray(array)).tobytes())
    return digest.hexdigest()


@eqx.filter_jit
def _batched_kernels(problem, keys, order, max_bytes):
    return eqx.filter_vmap(lambda key: initial_kernels(
        with_key(problem, key), order=order, max_bytes=max_bytes))(keys)


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
    share = None
    if isinstance(ensemble.problem, NTHProblem) and "order" in ensemble.axes \
            and "kernels" not in options and ensemble.seeds is not None:
        share = max(ensemble.axes["order"])
    return SolveMembers(solver, options, ensemble.vmap, share)
