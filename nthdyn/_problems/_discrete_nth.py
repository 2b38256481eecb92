"""The truncated hierarchy of discrete gradient descent (Huang & Yau Section 4 item 2,
eq. (29)), a discrete map in function space.

**The step.** Gradient descent moves the parameters by the fixed vector
`delta = -(eta/n) J^T r`, so every function of `theta` at step `k + 1` is its Taylor
series along `delta` (`_kernels/_taylor.py`); with `c = -(eta/n) r`:

    f_{k+1}       = f   + K2[c]  + 1/2 F(3)[c, c] + 1/6 F(4)[c, c, c] + ...
    K2_{k+1}      = K2  + K(3)[c] + 1/2 calK(4)[c, c] + 1/6 calK(5)[c, c, c] + ...   (eq. (29))
    K(3)_{k+1}    = K(3) + K(4)[c] + 1/2 grad^2 K(3)[..][c, c] + ...

Each contraction is over the last slots. The first-order coefficient of any function
is its derivative along `grad f_b`, which is the NTH's (eq. (10)): `K(r+1)`. The
higher ones hold the directions fixed: the Taylor kernels `calK(r)` and the output
kernels `F(r)`. With the width scales of eq. (11) a kernel with `r` slots is of size
`m^-(r/2-1)` (odd `r`: one more `m^-1/2`), so the order-`s` truncation keeps every
term whose kernel has at most `s` slots and freezes the kernels with exactly `s`
slots (the top), as eq. (15) does:

| `s` | evolved | frozen at their `t = 0` values |
|---|---|---|
| 2 | `f` | `K2` |
| 3 | `f`, `K2` | `K(3)` (and `F(3) = symmetrized_output_kernel(K(3))`) |
| 4 | `f`, `K2`, `K(3)` | `K(4)`, `calK(4)`, `F(4)` |

`F(3)` is always taken from the current `K(3)` (the identity holds at every `theta`).
Why the state holds the NTH's `K(r)` and not the Taylor kernels: `calK(3) = K(3)` as
functions of `theta`, so `calK(3)` moves with `K(4)`, not with `calK(4)`; a state of
Taylor kernels alone does not close. At order 5 the kernels `calK(4)` and `F(4)` stop
being the top and would have to evolve, along the fields `Hess f_c grad f_e` that are
not of the form `grad f_b` (see `docs/discrete.md`); orders above 4 are refused.

**Accuracy.** From exact kernels, one step of order `s` leaves out the `eta^s` term
of `f` (error `O(eta^s)`) and the `eta^(s-1)` term of `K2`. As `eta -> 0` with
`t = eta k` fixed, every `eta^2` term vanishes per unit time and the map becomes the
explicit Euler scheme of the continuous NTH of order `s` (eq. (15)): the two agree to
`O(eta)` (tested).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import positive_float, positive_int
from .._data import TrainingSet
from .._kernels import (
    MAX_KERNEL_BYTES,
    base_kernel,
    check_kernel_size,
    check_order,
    derived_kernel,
    output_taylor_kernel_traced,
    symmetrized_output_kernel,
)
from .._network import AbstractNetwork
from .._solve import AbstractMap, half_mean_square, observed
from ._base import AbstractProblem, check_common

#: The highest order at which the discrete hierarchy closes on these kernels.
MAX_DISCRETE_ORDER = 4


class DiscreteKernels(eqx.Module):
    """What starts the discrete hierarchy: the outputs `f`, the NTH kernels
    `K = (K(2), ..., K(s))` and the top Taylor kernels `calK(4)`, `F(4)` (`None` below
    order 4), all at the network's parameters. Kernels of order 4 serve every lower
    order (`truncate`), so a sweep over orders computes them once."""

    f: Float[Array, " n"]
    K: tuple[Array, ...]
    calK4: Array | None
    F4: Array | None

    @property
    def order(self) -> int:
        return len(self.K) + 1

    def truncate(self, order: int) -> DiscreteKernels:
        """The kernels of the order-`order` hierarchy."""
        if order > self.order:
            raise ValueError(f"kernels=...: these kernels go up to order {self.order}; the "
                             f"problem needs order {order}. Compute them with "
                             f"initial_discrete_kernels(remake(problem, order={order})).")
        top = order >= 4
        return DiscreteKernels(self.f, self.K[:order - 1], self.calK4 if top else None,
                               self.F4 if top else None)


def initial_discrete_kernels(problem: DiscreteNTHProblem, *, order: int | None = None,
                             max_bytes: int = MAX_KERNEL_BYTES) -> DiscreteKernels:
    """The outputs, NTH kernels `K(2..s)` and (order 4) `calK(4)`, `F(4)` of `problem`'s
    network; `order` overrides the problem's `s`. One compiled program computes them all.

    Cost: dominated by the top kernels, about `(3 n)^(s-2)` times one K2 for `K(s)`;
    at order 4 also `(2 n)^2` K2s for `calK(4)` and `(2 n)^3` forward passes for `F(4)`;
    memory `8 n^s` bytes for each top kernel."""
    if not isinstance(problem, DiscreteNTHProblem):
        raise TypeError(f"problem={type(problem).__name__}: initial_discrete_kernels takes an "
                        "nthdyn.DiscreteNTHProblem.")
    net, n = problem.network, problem.data.n
    s = problem.order if order is None else _check_discrete_order(net, order)
    check_kernel_size(f"K({s})", n, n, s, max_bytes, "a lower order")  # the largest tensor
    return _initial_kernels(net, problem.data.X, s, base_kernel(net, "auto"))


@eqx.filter_jit
def _initial_kernels(network, X, order, base):
    K = tuple(derived_kernel(network, X, X, r, base, True) for r in range(2, order + 1))
    if order < 4:
        return DiscreteKernels(network(X), K, None, None)
    return DiscreteKernels(network(X), K, derived_kernel(network, X, X, 4, base, True, fixed=True),
                           output_taylor_kernel_traced(network, X, X, 4))


def _check_discrete_order(network: AbstractNetwork, order: Any) -> int:
    order = check_order(network, order)
    if order > MAX_DISCRETE_ORDER:
        raise ValueError(
            f"order={order}: the discrete hierarchy is closed here up to order "
            f"{MAX_DISCRETE_ORDER}. At order 5 the Taylor kernels calK(4) and F(4) stop being "
            "the top and would have to evolve too, along the fields Hess f_c grad f_e, which "
            "these kernels do not describe (docs/discrete.md). Use order=2, 3 or 4.")
    return order


def _contract(kernel: Array, c: Array, times: int) -> Array:
    """`kernel[c, ..., c]`: the last `times` slots contracted with `c`."""
    for _ in range(times):
        kernel = jnp.tensordot(kernel, c, axes=([-1], [0]))
    return kernel


def _taylor_step(value: Array, coefficients: tuple[Array, ...], c: Array) -> Array:
    """`value + sum_j 1/j! T_j[c^j]` (the series (*) of `_kernels/_taylor.py`)."""
    for j, kernel in enumerate(coefficients, start=1):
        value = value + _contract(kernel, c, j) / math.factorial(j)
    return value


class DiscreteHierarchy(AbstractMap):
    """The step map of the module docstring. The state is `{"f", "K": (K~2, ...,
    K~(s-1))}`; `top = (K(s), calK(4), F(4))` (the last two at order 4 only) is frozen."""

    y: Array
    learning_rate: Array
    top: tuple[Array, ...]
    order: int = eqx.field(static=True)

    @property
    def method(self):
        return f"DiscreteHierarchy(order={self.order})"

    def record(self):
        return {"order": self.order}

    def _kernels(self, state):
        return state["K"] + self.top[:1]  # K~2, ..., K~(s)

    def step(self, k, state):
        s, f = self.order, state["f"]
        c = -(self.learning_rate / f.shape[0]) * (f - self.y)
        K = self._kernels(state)
        output = (K[0],) + ((symmetrized_output_kernel(K[1]),) if s >= 3 else ()) + self.top[2:]
        new = {"f": _taylor_step(f, output, c)}
        if s >= 3:
            second = self.top[1:2]  # calK(4): the eta^2 term of K2 at order 4
            new["K"] = tuple(_taylor_step(K[q], (K[q + 1],) + (second if q == 0 else ()), c)
                             for q in range(s - 2))
        else:
            new["K"] = ()
        return new

    def observe(self, state):
        f = state["f"]
        return observed(f=f, loss=half_mean_square(f, self.y), ntk=self._kernels(state)[0])


class DiscreteNTHProblem(AbstractProblem):
    """The order-`s` truncated hierarchy of discrete gradient descent (Huang & Yau
    Section 4 item 2, eq. (29); see the module docstring): outputs and kernels step
    by their Taylor series along the gradient-descent update, truncated at order `s`,
    started from the network's kernels. Time is the step count, as for
    `GradientDescentProblem`.

    **Arguments:**

    - `network`: the network at step 0 (its kernels start the hierarchy).
    - `data`: a `TrainingSet` (or an `(X, y)` pair).
    - `order`: `s` in `2, 3, 4`; `s >= 3` needs a smooth activation.
    - `learning_rate`: the step size `eta > 0` (the step is `-(eta/n) J^T r`).
    - `steps`: the number of steps.

    **Solve:** `solve(problem, kernels=None, max_bytes=2 GiB, saveat=..., progress=...,
    throw=...)`; `kernels`: precomputed `initial_discrete_kernels` (of this order or
    higher). The solution's `ntk` is `K~2` at each saved step; its `network` is `None`.
    """

    network: AbstractNetwork
    data: TrainingSet
    order: int = eqx.field(static=True)
    learning_rate: float = eqx.field(static=True)
    steps: int = eqx.field(static=True)
    test: None = None

    solve_options: ClassVar[dict[str, Any]] = {"kernels": None, "max_bytes": MAX_KERNEL_BYTES}
    discrete: ClassVar[bool] = True

    def __init__(self, network, data, order, learning_rate, steps):
        self.network, self.data, self.test = check_common(network, data, None)
        self.order = _check_discrete_order(self.network, order)
        self.learning_rate = positive_float(learning_rate, "learning_rate")
        self.steps = positive_int(steps, "steps")

    @property
    def span(self):
        return (0, self.steps)

    def dynamics(self, solver, settings):
        if solver is not None:
            raise TypeError(f"solver={solver!r}: DiscreteNTHProblem is a discrete map with one "
                            "method; call nthdyn.solve(problem) without a solver.")
        kernels = settings.extra["kernels"]
        if kernels is None:
            kernels = initial_discrete_kernels(self, max_bytes=settings.extra["max_bytes"])
        elif not isinstance(kernels, DiscreteKernels):
            raise TypeError(f"kernels={type(kernels).__name__}: pass the result of "
                            "nthdyn.initial_discrete_kernels(problem) (or None to compute them).")
        elif kernels.f.shape != (self.data.n,):
            raise ValueError(f"kernels=...: they are for {kernels.f.shape[-1]} training points; "
                             f"this problem has n={self.data.n}.")
        kernels = kernels.truncate(self.order)
        top = (kernels.K[-1],) + ((kernels.calK4, kernels.F4) if self.order >= 4 else ())
        lr = jnp.asarray(self.learning_rate, self.data.X.dtype)
        state = {"f": kernels.f, "K": tuple(kernels.K[:-1])}
        return DiscreteHierarchy(y=self.data.y, learning_rate=lr, top=top, order=self.order), state

    def failure_message(self, status, solution, settings):
        if status == "nonfinite":
            return (f"the order-{self.order} discrete hierarchy produced non-finite values with "
                    f"learning_rate={self.learning_rate}: the step is beyond the stability edge "
                    "2n/lambda_max(K2) or the truncation is not valid this far; lower the "
                    "learning rate or the steps.")
        return super().failure_message(status, solution, settings)

    def labels(self):
        eq = "Huang & Yau eq. (29)"
        return {"f": {"long_name": "output f~ of the truncated discrete hierarchy after each "
                                   "step", "equation": eq},
                "ntk": {"long_name": "kernel K~2(x_a, x_b) of the truncated discrete hierarchy",
                        "equation": eq}}

    def title(self):
        return f"nthdyn order-{self.order} discrete hierarchy solution"
