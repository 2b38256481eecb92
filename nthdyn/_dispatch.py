"""`fast_jit`: `equinox.filter_jit`'s rule (arrays are traced, everything else is static)
with a cheaper call.

`eqx.filter_jit` partitions and hashes its arguments in Python on every call, about
0.2 ms, which is most of a small kernel's cost (K3 of an MLP of width 128 on 6 points
takes about as long to compute). Here the arguments are flattened once by JAX
(`tree_flatten`, in C++), and the non-array leaves together with the tree structure
key a cache of `jax.jit`-compiled functions of the array leaves alone.

Used for the kernel functions that users call in loops (`ntk`, `hierarchy_kernel`,
`hierarchy_contraction`, `taylor_*`); the solve core keeps `eqx.filter_jit`, whose
cost is small against a solve.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


#: What `eqx.is_array` calls an array (tested inline: a function call per leaf is ~1 us).
ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)


def fast_jit(fn: Callable) -> Callable:
    """`fn` compiled once per tree structure and non-array leaves of its arguments
    (which must be hashable, as for `eqx.filter_jit`); it must return a pytree of
    arrays."""
    compiled: dict[Any, Callable] = {}

    @functools.wraps(fn)
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
