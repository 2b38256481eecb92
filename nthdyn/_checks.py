"""Argument checks shared by the public constructors: each error names the
argument, the value, and what to pass instead."""

from __future__ import annotations

import math
import weakref
from typing import Any

import jax
import numpy as np


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}.")
    return int(value)


def positive_float(value: Any, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}={value!r}: must be a positive number.")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r}: must be a finite number {bound}.")
    return value


#: JAX arrays that passed a host check, by `(check, id(array))`, held weakly.
_PASSED: dict[tuple[str, int], weakref.ref] = {}


def passed_before(value: Any, check: str) -> bool:
    """Whether this very JAX array already passed the host check named `check`. A JAX
    array is immutable, so its values cannot have changed since: a kernel called in a
    loop on the same inputs checks them once (NumPy on the host, ~50 us a call)."""
    ref = _PASSED.get((check, id(value)))
    return ref is not None and ref() is value


def remember_passed(value: Any, check: str) -> None:
    """Record that the JAX array `value` passed `check` (forgotten when it is freed)."""
    if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
        key = (check, id(value))
        _PASSED[key] = weakref.ref(value, lambda _, key=key: _PASSED.pop(key, None))


def default_float() -> Any:
    """`jnp.result_type(float)` (float64 with JAX's x64 mode on, else float32) without
    its ~4 us of dtype promotion, for checks that run on every kernel call."""
    return np.dtype(np.float64 if jax.config.jax_enable_x64 else np.float32)
