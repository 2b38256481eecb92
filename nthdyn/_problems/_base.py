"""Problems: immutable descriptions of what to solve (SciML style).

A problem holds a network at initialisation (or a kernel), a training set, its span
and optional test points. For the solve core it supplies, through `dynamics`, its
state, its vector field or step map and its observables; `solve(problem, solver,
**options)` does the rest, and `remake(problem, **changes)` builds a variant.
"""

from __future__ import annotations

import abc
import inspect
from typing import Any, ClassVar

import equinox as eqx
from jaxtyping import Array, Float

from .._data import TrainingSet, as_training_set_for, check_inputs
from .._network import AbstractNetwork
from .._solve import RESULTS, Settings, Solution, last_finite_time, solve, solve_problem


def check_common(network: Any, data: Any, test: Any):
    """The network, training set and test points of a problem, validated."""
    if not isinstance(network, AbstractNetwork):
        raise TypeError(
            f"network={type(network).__name__}: pass an nthdyn network such as "
            "nthdyn.MLP(in_size=4, width=512, depth=1, key=0)."
        )
    data = as_training_set_for(data, network.in_size)
    if test is not None:
        test = check_inputs(test, "test", in_size=network.in_size)
    return network, data, test


class AbstractProblem(eqx.Module):
    """A training problem: a network (or kernel), its training set, test points.

    Subclasses state their own `solve` options (`solve_options`, with defaults),
    whether time is a step count (`discrete`), their `span`, and build the
    `dynamics` that the solve core evolves.
    """

    network: eqx.AbstractVar[AbstractNetwork | None]
    data: eqx.AbstractVar[TrainingSet]
    test: eqx.AbstractVar[Float[Array, "t d"] | None]

    #: The problem's own options of `solve` and their defaults.
    solve_options: ClassVar[dict[str, Any]] = {}
    #: Whether time is a step count (a discrete map) rather than continuous.
    discrete: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def span(self) -> tuple[float, float]:
        """`(start, end)` of time (or of the steps)."""

    @abc.abstractmethod
    def dynamics(self, solver: Any, settings: Settings) -> tuple[Any, Any]:
        """`(dynamics, y0)` for the solve core: an `AbstractODE`, `AbstractMap` or
        `AbstractClosedForm`, and the initial state. Traceable: no host
        conversions of the problem's arrays."""

    def failure_message(self, status: str, solution: Solution, settings: Settings) -> str:
        """What went wrong and what to change, for `throw=True` on the host."""
        last = last_finite_time(solution.t, solution.f)
        if status == "max_steps_reached":
            return (f"max_steps={settings.max_steps} steps were not enough to reach "
                    f"t={settings.t1} (the last save time reached was t={last}). Raise "
                    f"max_steps, loosen rtol/atol (now {settings.rtol:g}/{settings.atol:g}), "
                    "or shorten the span.")
        if status == "nonfinite":
            return (f"the outputs became non-finite after t={last}. Lower the weight scales "
                    "or check the data.")
        return RESULTS[getattr(RESULTS, status)]

    def labels(self) -> dict[str, dict[str, str]]:
        """Relabelled variables of this problem's Datasets: `{name: {"long_name":
        ..., "equation": ...}}` (the registry's labels otherwise)."""
        return {}

    def title(self) -> str:
        return f"nthdyn {type(self).__name__} solution"

    def with_network(self, network: AbstractNetwork) -> AbstractProblem:
        """The problem with another network (no checks: safe under `vmap`)."""
        return eqx.tree_at(lambda p: p.network, self, network)

    def fields(self) -> dict[str, Any]:
        """The constructor arguments (named as the fields they set)."""
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        return {name: getattr(self, name) for name in names}

    def config(self) -> dict[str, Any]:
        """A JSON-ready description (for provenance in results files)."""
        settings = {name: value for name, value in self.fields().items()
                    if name not in ("network", "data", "test")}
        return {
            "problem": type(self).__name__,
            **settings,
            "network": self.network.config(),
            "n": self.data.n,
            "d": self.data.d,
            "n_test": 0 if self.test is None else int(self.test.shape[0]),
        }


def remake(problem: AbstractProblem, **changes: Any) -> AbstractProblem:
    """A copy of `problem` with some fields changed (SciML's `remake`).

    A change names a field of the problem (`tspan`, `data`, `test`, `network`,
    `steps`, `learning_rate`, `order`, `kernel`, ...) or a hyperparameter of its
    network (`width`, `depth`, `key`, `activation`, ...), which re-initialises the
    network from its key (kept unless changed; a network built from given weights
    needs a new `key`).

        remake(problem, width=2048, key=jax.random.key(3), tspan=(0.0, 5.0))
    """
    if not isinstance(problem, AbstractProblem):
        raise TypeError(f"remake takes a problem, not {type(problem).__name__}.")
    fields = problem.fields()
    network_changes = {k: v for k, v in changes.items() if k not in fields}
    fields.update({k: v for k, v in changes.items() if k in fields})
    if network_changes:
        network = fields["network"] if "network" in fields else problem.network
        if network is None:
            raise TypeError(f"remake({', '.join(network_changes)}): this "
                            f"{type(problem).__name__} has no network to change.")
        network = network.remake(**network_changes)
        if "network" in fields:
            fields["network"] = network
        else:  # the network sits inside another field (a kernel's)
            fields = {**problem.with_network(network).fields(),
                      **{k: v for k, v in changes.items() if k in fields}}
    return type(problem)(**fields)  # checked again


solve.register(AbstractProblem)(solve_problem)
