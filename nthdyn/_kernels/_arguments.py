"""The checked arguments of a kernel call: the network, the inputs, the order, the
contraction vectors, the base kernel (`method`), `factored` and the size of a full
tensor, each refused with an error that names the argument, the value and the fix.

The public kernel functions (`hierarchy_kernel`, `hierarchy_contraction`, the Taylor
kernels of `_taylor.py`) check here, then call the traceable computations of
`_hierarchy.py`. A call's checks run once for the same network and JAX arrays
(`kernel_call`): all are immutable.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import passed_before, positive_int, recall, remember, remember_passed
from .._data import check_inputs, float_values
from .._network import AbstractLayeredNetwork, AbstractNetwork
from ._ntk import check_network, ntk_jacobian, ntk_structured

#: Default cap on the size of a full kernel tensor (bytes).
MAX_KERNEL_BYTES = 2 * 1024**3

_BASES = {"structured": ntk_structured, "jacobian": ntk_jacobian}


def base_kernel(network: AbstractNetwork, method: str) -> Callable:
    """The base `K2(network, X_first, X2)` that every derived kernel starts from:
    `"structured"` (eq. (7), layered networks), `"jacobian"` (`J1 J^T`, any network)
    or `"auto"` (structured where the network is layered)."""
    if method == "auto":
        method = "structured" if isinstance(network, AbstractLayeredNetwork) else "jacobian"
    if method not in _BASES:
        raise ValueError(f"method={method!r}: use 'auto', 'structured' or 'jacobian'.")
    if method == "structured" and not isinstance(network, AbstractLayeredNetwork):
        raise TypeError(
            f"method='structured' needs a layered network (MLP, JacotMLP), not "
            f"{type(network).__name__}; use method='jacobian'."
        )
    return _BASES[method]


def check_vector(value: Any, name: str, n: int, dtype: Any) -> Float[Array, " n"]:
    """`value` as a finite vector of shape `(n,)`: it contracts a slot over the `n`
    training inputs (a traced value is checked for its shape only)."""
    if passed_before(value, "finite") and value.shape == (n,) and value.dtype == dtype:
        return value  # the same JAX array as before: a vector in a loop is checked once
    traced = isinstance(value, jax.core.Tracer)
    if not traced:
        values = float_values(value, name).ravel()
        if values.size and not np.all(np.isfinite(values)):
            raise ValueError(f"{name} has a non-finite entry ({values[~np.isfinite(values)][0]}): "
                             "pass finite vectors.")
    if not (isinstance(value, jax.Array) and value.dtype == dtype):  # no copy back
        value = jnp.asarray(value, dtype)
    if not traced:
        remember_passed(value, "finite")
    if value.shape != (n,):
        raise ValueError(f"{name} has shape {value.shape}: it contracts a slot over the {n} "
                         f"training inputs, shape ({n},).")
    return value


def check_order(network: AbstractNetwork, order: Any, *, name: str = "order",
                smooth: bool | None = None) -> int:
    """`order >= 2`, and a smooth activation when `order >= 3` (Assumption 2.1);
    `smooth`: the network's `smooth()` where it is known (`KernelCall.smooth`)."""
    order = positive_int(order, name, minimum=2)
    if smooth is None:
        smooth = type(network).smooth(network)  # eager: see `low_rank_pays`
    if order >= 3 and not smooth:
        what = (network.activation.name if isinstance(network, AbstractLayeredNetwork)
                else type(network).__name__)
        raise ValueError(
            f"{name}={order} needs a smooth activation, but the network uses "
            f"{what}: K(3) and higher contain its second and higher "
            "derivatives, which vanish almost everywhere and are infinite at 0 "
            "(Huang & Yau, Assumption 2.1). Use a smooth activation, e.g. "
            "nthdyn.Softplus(sharpness=10.0), or stay at order 2 (the NTK)."
        )
    return order


def can_factor(network: AbstractNetwork, base: Callable) -> bool:
    """Factored directions need a layered network and the structured base."""
    return isinstance(network, AbstractLayeredNetwork) and base is ntk_structured


def check_factored(network: AbstractNetwork, base: Callable, factored: Any) -> bool | None:
    """`factored` as given (None, True or False); `True` is refused where factored
    directions cannot apply. (Eager and cheap; the shape rule runs at trace time.)"""
    if factored not in (None, True, False):
        raise TypeError(f"factored={factored!r}: pass None (automatic, by shape), True or False.")
    if factored and not can_factor(network, base):
        raise ValueError(
            "factored=True: factored directions need a layered network (MLP, JacotMLP, "
            f"TwoLayer) and method='structured' (got {type(network).__name__} with the "
            f"{'structured' if base is ntk_structured else 'jacobian'} base); pass "
            "factored=None to choose automatically.")
    return factored


class KernelCall(NamedTuple):
    """The checked arguments of a kernel call (`kernel_call`)."""

    X: Array
    X_first: Array
    symmetric: bool
    base: Callable
    factored: bool | None
    smooth: bool


def kernel_call(network: AbstractNetwork, X: Any, X_first: Any, method: Any,
                factored: Any) -> KernelCall:
    """The network, inputs (`kernel_inputs`), `method` (`base_kernel`) and `factored`
    (`check_factored`) of a kernel call, checked; and whether the network is smooth.

    The same network with the same JAX arrays is checked once (`recall`): the arrays
    are immutable, and what is checked of the network (its class, static fields and
    input size) cannot change either. The checks take 40-50 us of Python a call on
    this 2-core machine when the caches are cold (isinstance on abstract classes,
    Equinox's attribute access), as long as K3[c] of an MLP of width 128 on 6 points
    takes to compute; a lookup takes 6-8 us.
    """
    key = (("kernel call", method, factored)
           if type(method) is str and (factored is None or type(factored) is bool) else None)
    facts = None if key is None else recall(key, network, X, X_first)
    if facts is not None:
        return KernelCall(X, X if X_first is None else X_first, *facts)
    check_network(network)
    checked_X, checked_X_first, symmetric = kernel_inputs(network, X, X_first)
    base = base_kernel(network, method)
    facts = (symmetric, base, check_factored(network, base, factored),
             type(network).smooth(network))
    # only inputs used as given: a converted copy would live as long as the record
    given = X if X_first is None else X_first
    if key is not None and checked_X is X and checked_X_first is given:
        remember(key, (network, X, X_first), facts)
    return KernelCall(checked_X, checked_X_first, *facts)


def kernel_inputs(network: AbstractNetwork, X: Any, X_first: Any) -> tuple[Array, Array, bool]:
    """`(X, X_first, symmetric)`: the checked training inputs, the first slot's inputs
    (`X` itself when `X_first` is None, then the kernel is symmetric in its first two
    slots)."""
    X = check_inputs(X, "X", in_size=network.in_size)
    if X_first is None:
        return X, X, True
    return X, check_inputs(X_first, "X_first", in_size=network.in_size), False


def check_max_bytes(max_bytes: Any) -> Any:
    """`max_bytes`, a number of bytes > 0 (`math.inf` for no cap)."""
    number = isinstance(max_bytes, numbers.Real) and not isinstance(max_bytes, bool)
    if not number or not max_bytes > 0:
        raise (ValueError if number else TypeError)(
            f"max_bytes={max_bytes!r}: pass the largest kernel tensor to build, in bytes "
            "(a number > 0), e.g. max_bytes=2 * 1024**3 (the default, 2 GiB).")
    return max_bytes


def kernel_bytes(n_first: int, n: int, order: int) -> int:
    """Bytes of a float64 `K(order)` with `n_first x n^(order-1)` entries."""
    return 8 * n_first * n ** (order - 1)


def check_kernel_size(what: str, n_first: int, n: int, order: int, max_bytes: Any,
                      instead: str) -> None:
    """Refuse to build the tensor `what` (`n_first x n^(order-1)` entries) above
    `max_bytes`; the message suggests `instead`."""
    max_bytes = check_max_bytes(max_bytes)
    size = kernel_bytes(n_first, n, order)
    if size > max_bytes:
        raise MemoryError(
            f"{what} on {n_first} x {n}^{order - 1} points would take {size / 1e9:.3g} GB "
            f"(max_bytes={max_bytes / 1e9:.3g} GB). Use {instead}, fewer points, or a larger "
            "max_bytes if the memory is there.")
