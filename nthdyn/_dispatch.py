"""`fast_jit`: a kernel function compiled by `jax.jit` (dispatched in C++), with
`equinox.filter_jit`'s rule (leaves that are not arrays are static) for the arguments
`jax.jit` cannot take.

`eqx.filter_jit` partitions and hashes its arguments in Python on every call, about
0.2 ms, which is most of a small kernel's cost (K3 of an MLP of width 128 on 6 points
takes about as long to compute). nthdyn's networks have only arrays for leaves (their
hyperparameters are static fields), so a kernel function's arguments split by name:
the `static` ones (an order, a flag, the base kernel) and pytrees of arrays. `jax.jit`
with `static_argnames` then flattens, hashes and dispatches them in C++.

A network of the user's with a non-array leaf (a Python number, a function) is not an
argument `jax.jit` can take. After the first such call, calls with the same argument
types take the general path: the arguments flattened by JAX, and the non-array leaves
with the tree structure keying a cache of `jax.jit` functions of the array leaves alone.

Used for the kernel functions that users call in loops (`ntk`, `hierarchy_kernel`,
`hierarchy_contraction`, `taylor_*`); the solve core keeps `eqx.filter_jit`, whose
cost is small against a solve.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


#: What `eqx.is_array` calls an array (tested inline: a function call per leaf is ~1 us).
ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)


def fast_jit(*, static: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Decorator: the function compiled once per shapes, dtypes, tree structure and
    values of the arguments named in `static` (hashable), as by `jax.jit`. Elsewhere,
    a non-array leaf that `jax.jit` cannot take (a function; a Python number used where
    a concrete value is needed) is static, as for `eqx.filter_jit`: compiled once per
    value. It must return a pytree of arrays."""

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)
        jitted = jax.jit(fn, static_argnames=static)
        filtered = _filtered(fn)
        general: set = set()  # the argument types of calls that had a non-array leaf

        @functools.wraps(fn)
        def call(*args, **kwargs):
            if general and _types(args, kwargs) in general:
                return filtered(*args, **kwargs)
            try:
                return jitted(*args, **kwargs)
            except TypeError:  # not an array, or a traced number used as static
                bound = signature.bind(*args, **kwargs).arguments
                dynamic = [value for name, value in bound.items() if name not in static]
                leaves = jax.tree_util.tree_leaves(dynamic)
                if all(isinstance(leaf, ARRAY_TYPES) for leaf in leaves):
                    raise  # an error of `fn` itself
            general.add(_types(args, kwargs))
            return filtered(*args, **kwargs)

        return call

    return decorate


def _types(args: tuple, kwargs: dict) -> tuple:
    """The types of a call's arguments, to remember the calls that need the general path."""
    return tuple(map(type, args)), tuple((name, type(value)) for name, value in kwargs.items())


def _filtered(fn: Callable) -> Callable:
    """`fn` compiled once per tree structure and non-array leaves of its arguments."""
    compiled: dict[Any, Callable] = {}

    def call(*args, **kwargs):
        leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
        arrays, static, traced = [], [], []
        for leaf in leaves:  # one pass: this runs on every call
            if isinstance(leaf, ARRAY_TYPES):
                arrays.append(leaf)
                traced.append(True)
            else:
                static.append(leaf)
                traced.append(False)
        key = (treedef, tuple(traced), tuple(static))
        jitted = compiled.get(key)
        if jitted is None:
            jitted = compiled[key] = jax.jit(_of_arrays(fn, treedef, key[1], key[2]))
        return jitted(arrays)

    return call


def _of_arrays(fn: Callable, treedef: Any, traced: tuple[bool, ...], static: tuple) -> Callable:
    """`fn` as a function of the array leaves alone (the others are `static`)."""

    def of_arrays(arrays):
        it_arrays, it_static = iter(arrays), iter(static)
        full = [next(it_arrays) if is_array else next(it_static) for is_array in traced]
        inner_args, inner_kwargs = jax.tree_util.tree_unflatten(treedef, full)
        return fn(*inner_args, **inner_kwargs)

    return of_arrays
