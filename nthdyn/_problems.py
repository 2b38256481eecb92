"""Problem types: immutable descriptions of what to solve (SciML style).

A problem holds a network at initialisation, a training set, the time span and
optional test points; `solve(problem, solver, **options)` solves it and
`remake(problem, **changes)` builds a variant.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import equinox as eqx
from jaxtyping import Array, Float

from ._checks import positive_float, positive_int
from ._data import TrainingSet, as_training_set, check_inputs
from ._network import AbstractNetwork


def _check_common(network: Any, data: Any, test: Any):
    if not isinstance(network, AbstractNetwork):
        raise TypeError(
            f"network={type(network).__name__}: pass an nthdyn network such as "
            "nthdyn.MLP(in_size=4, width=512, depth=1, key=0)."
        )
    data = as_training_set(data)
    if data.d != network.in_size:
        raise ValueError(
            f"data has inputs of dimension {data.d} but the network takes in_size="
            f"{network.in_size}: build the network with in_size={data.d}."
        )
    if test is not None:
        test = check_inputs(test, "test", in_size=network.in_size)
    return network, data, test


class AbstractProblem(eqx.Module):
    """A training problem: a network, its training set, optional test points."""

    network: eqx.AbstractVar[AbstractNetwork]
    data: eqx.AbstractVar[TrainingSet]
    test: eqx.AbstractVar[Float[Array, "t d"] | None]

    def config(self) -> dict[str, Any]:
        """A JSON-ready description (for provenance in results files)."""
        settings = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("network", "data", "test")
        }
        return {
            "problem": type(self).__name__,
            **settings,
            "network": self.network.config(),
            "n": self.data.n,
            "d": self.data.d,
            "n_test": 0 if self.test is None else int(self.test.shape[0]),
        }


class GradientFlowProblem(AbstractProblem):
    """Exact training by gradient flow, Huang & Yau eq. (3)-(5):
    `d theta / dt = -grad L(theta)`, `L = 1/(2n) sum_b (f(x_b) - y_b)^2`.

    **Arguments:**

    - `network`: the network at `t = tspan[0]`.
    - `data`: a `TrainingSet` (or an `(X, y)` pair).
    - `tspan`: `(t0, t1)` with `t0 < t1`.
    - `test`: optional test inputs `(t, d)` whose outputs are tracked too.
    """

    network: AbstractNetwork
    data: TrainingSet
    tspan: tuple[float, float] = eqx.field(static=True)
    test: Float[Array, "t d"] | None = None

    def __init__(self, network, data, tspan, *, test=None):
        self.network, self.data, self.test = _check_common(network, data, test)
        self.tspan = _check_tspan(tspan)


class GradientDescentProblem(AbstractProblem):
    """Discrete gradient descent `theta_{k+1} = theta_k - eta grad L(theta_k)`
    (Huang & Yau Section 4 item 2; Jacot et al. Section 6). Time is the step count.

    **Arguments:**

    - `network`, `data`, `test`: as for `GradientFlowProblem`.
    - `steps`: the number of steps.
    - `learning_rate`: the step size `eta > 0`. Gradient descent with `eta` tracks
      the gradient flow at time `t = eta * steps` as `eta -> 0`.
    """

    network: AbstractNetwork
    data: TrainingSet
    steps: int = eqx.field(static=True)
    learning_rate: float = eqx.field(static=True)
    test: Float[Array, "t d"] | None = None

    def __init__(self, network, data, steps, learning_rate, *, test=None):
        self.network, self.data, self.test = _check_common(network, data, test)
        self.steps = positive_int(steps, "steps")
        self.learning_rate = positive_float(learning_rate, "learning_rate")


def _check_tspan(tspan: Any) -> tuple[float, float]:
    try:
        t0, t1 = (float(t) for t in tspan)
    except (TypeError, ValueError):
        raise ValueError(f"tspan={tspan!r}: pass two numbers (t0, t1), e.g. (0.0, 50.0).") from None
    if not (math.isfinite(t0) and math.isfinite(t1)):
        raise ValueError(f"tspan={tspan!r}: both ends must be finite.")
    if not t0 < t1:
        raise ValueError(
            f"tspan={tspan!r}: the end must be after the start (t0 < t1); "
            "training runs forward in time."
        )
    return (t0, t1)


def remake(problem: AbstractProblem, **changes: Any) -> AbstractProblem:
    """A copy of `problem` with some fields changed (SciML's `remake`).

    A change names a field of the problem (`tspan`, `data`, `test`, `network`,
    `steps`, `learning_rate`, `order`) or a hyperparameter of its network (`width`,
    `depth`, `key`, `activation`, ...), which re-initialises the network from its
    key (kept unless changed).

        remake(problem, width=2048, key=jax.random.key(3), tspan=(0.0, 5.0))
    """
    if not isinstance(problem, AbstractProblem):
        raise TypeError(f"remake takes a problem, not {type(problem).__name__}.")
    fields = {f.name: getattr(problem, f.name) for f in dataclasses.fields(problem)}
    network_changes = {k: v for k, v in changes.items() if k not in fields}
    fields.update({k: v for k, v in changes.items() if k in fields})
    if network_changes:
        fields["network"] = fields["network"].remake(**network_changes)
    return type(problem)(**fields)  # constructor arguments are named as the fields
