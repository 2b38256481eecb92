"""The solve core: one routine turns any problem into a `Solution`.

    problem --(check_options, on the host)--> Settings
    problem.dynamics(solver, settings) -----> (dynamics, y0)     state, vector field or step
                                                                 map, observables
    dynamics.run(y0, settings) -------------> the single diffrax call, the discrete loop or
                                              the closed form, jitted: saved observables,
                                              the final state, RESULTS, statistics
    --> Solution (throw: SolverError with the problem's message, or an error inside jit)

Everything after the option checks is traceable, so `solve` runs inside `jax.jit`
and under `eqx.filter_vmap` over a batch of networks.
"""

from __future__ import annotations

import abc
import functools
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._lazy import diffrax
from ._options import Settings, check_options
from ._results import (RESULTS, RETCODES, SolverError, all_finite, check_finite, code,
                       from_diffrax, is_traced)
from ._solution import Solution

#: The keys of the observables that every dynamics saves (None where absent).
OBSERVABLES = ("f", "dfdt", "loss", "ntk", "f_test", "dfdt_test")


class Float64Warning(UserWarning):
    """Results are computed in float32 because JAX's x64 mode is off."""


def check_float64() -> None:
    """Warn loudly when JAX runs in float32: results then cannot be compared with
    theory below ~1e-7."""
    if not jax.config.jax_enable_x64:
        warnings.warn(
            "JAX float64 is OFF (jax_enable_x64=False): nthdyn computes in float32 and "
            "errors below ~1e-7 are rounding noise. Turn it back on with "
            "jax.config.update('jax_enable_x64', True).",
            Float64Warning,
            stacklevel=4,
        )


def observed(*, f, loss, dfdt=None, ntk=None, f_test=None, dfdt_test=None,
             observables=None) -> dict[str, Any]:
    """The observables of one save, by name (`OBSERVABLES`); `observables` holds a
    problem's further ones (`{name: array}`, named in the variable registry)."""
    return dict(f=f, dfdt=dfdt, loss=loss, ntk=ntk, f_test=f_test, dfdt_test=dfdt_test,
                observables={} if observables is None else observables)


def half_mean_square(f, y):
    """The loss `L = 1/(2n) sum_b (f_b - y_b)^2` (Huang & Yau, Section 1)."""
    return 0.5 * jnp.mean((f - y) ** 2, axis=-1)


class Raw(eqx.Module):
    """What a jitted run returns (arrays only)."""

    t: jax.Array
    observed: dict[str, Any]
    final: Any
    result: RESULTS
    stats: dict[str, jax.Array]


class AbstractDynamics(eqx.Module):
    """What a problem hands the core: the state's evolution and its observables."""

    @property
    @abc.abstractmethod
    def method(self) -> str:
        """The name of the method, for provenance (e.g. `"Tsit5"`)."""

    @abc.abstractmethod
    def run(self, y0: Any, settings: Settings) -> Raw:
        """Evolve `y0` and save the observables at `settings.ts`."""

    def final(self, y1: Any) -> Any:
        """The network at the end of the span (`None`: the problem moves no parameters)."""
        return None

    def record(self) -> dict[str, Any]:
        """What the method decided, for provenance (e.g. the hierarchy's state size)."""
        return {}


class AbstractODE(AbstractDynamics):
    """`dy/dt = field(t, y)`, integrated by a diffrax solver; a dynamics with noise
    (an SDE `dy = field dt + g dW`) or a factored method overrides `terms` and `stepping`."""

    solver: eqx.AbstractVar[diffrax.AbstractSolver]

    @abc.abstractmethod
    def field(self, t: Any, y: Any, args: Any) -> Any:
        """The right-hand side."""

    def terms(self, t0: Any, t1: Any, y0: Any) -> diffrax.AbstractTerm:
        """The terms of the equation on `[t0, t1]` from `y0`: `dy = field dt` (an ODE) by
        default; an SDE returns `MultiTerm(ODETerm(field), ControlTerm(g, brownian))`."""
        return diffrax.ODETerm(self.field)

    def stepping(self, settings: Settings) -> tuple[diffrax.AbstractStepSizeController, Any]:
        """`(step-size controller, dt0)`: by default adaptive, clipped to the save times,
        from `settings.dt0`; an SDE steps on a fixed grid."""
        return settings.controller(), settings.dt0

    @abc.abstractmethod
    def observe(self, t: Any, y: Any, args: Any) -> dict[str, Any]:
        """The observables (`observed(...)`) of the state `y` at time `t`."""

    @property
    def method(self):
        return type(self.solver).__name__

    def run(self, y0, settings):
        controller, dt0 = self.stepping(settings)
        # t0, t1 static (Python floats): diffrax computes `t1` minus 100 ulps by 100
        # unrolled `prevbefore` calls (~2200 scalar HLO ops), which XLA folds at compile
        # time when `t1` is a constant (0.3 s less compilation per program on 2 CPU
        # cores); a new tspan compiles a new program. A start checked finite here needs
        # no event (0.2 s less); under vmap or jit it cannot be checked here.
        watch_start = is_traced(y0) or not bool(_all_finite(y0))
        return _integrate(self, y0, settings.t0, settings.t1,
                          jnp.asarray(settings.ts), controller, dt0, settings.max_steps,
                          settings.meter(), watch_start)


_all_finite = jax.jit(all_finite)  # one small program per state structure


@eqx.filter_jit
def _integrate(dynamics, y0, t0, t1, ts, controller, dt0, max_steps, meter, watch_start):
    """The single diffrax call of every ODE (and SDE) problem: observables at `ts`,
    the state at `t1` (for the final network), the status and the step counts.

    `watch_start`: stop at once on a non-finite start. Its every step's error estimate
    would be NaN, so the controller would reject steps until max_steps (100,000 for
    nothing); an event ends it, and `from_diffrax` reports it as `nonfinite`. (A finite
    start stays finite: a step whose error estimate is not finite is rejected.) A start
    checked finite on the host (`AbstractODE.run`) leaves the event out.

    `ForwardMode`: a `solve` is never differentiated in reverse mode (its inputs are
    checked on the host), so diffrax's plain `lax.while_loop` replaces the default
    adjoint's checkpointed loop, ~0.25 s less tracing per program."""
    saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=dynamics.observe),
                                  diffrax.SubSaveAt(t1=True)])
    event = None
    if watch_start:
        start_is_finite = all_finite(y0)
        event = diffrax.Event(lambda t, y, args, **kwargs: ~start_is_finite)
    sol = diffrax.diffeqsolve(
        dynamics.terms(t0, t1, y0), dynamics.solver, t0, t1, dt0, y0,
        saveat=saveat, stepsize_controller=controller, max_steps=max_steps,
        throw=False, progress_meter=meter, event=event, adjoint=diffrax.ForwardMode(),
    )
    saved, last = sol.ys
    y1 = jax.tree_util.tree_map(lambda leaf: leaf[-1], last)
    result = from_diffrax(sol.result, saved, y0)
    stats = {k: jnp.asarray(sol.stats[k]) for k in
             ("num_steps", "num_accepted_steps", "num_rejected_steps")}
    # the requested save times (diffrax fills those a failed solve never reached with inf)
    return Raw(ts, saved, dynamics.final(y1), result, stats)


class AbstractMap(AbstractDynamics):
    """A discrete map `y_{k+1} = step(k, y_k)`; time is the step count."""

    @abc.abstractmethod
    def step(self, k: Any, y: Any) -> Any:
        """One step."""

    @abc.abstractmethod
    def observe(self, y: Any) -> dict[str, Any]:
        """The observables of the state `y`."""

    def run(self, y0, settings):
        return _iterate(self, y0, jnp.asarray(settings.ts), int(settings.ts[-1]), settings.meter())


@eqx.filter_jit
def _iterate(dynamics, y0, targets, total, meter):
    """The discrete loop of every map: runs of steps between save points (dynamic
    bounds, so one compilation serves every save spacing), observables after each."""

    def segment(carry, target):
        y, done, meter_state = carry
        y = jax.lax.fori_loop(done, target, lambda k, state: dynamics.step(k, state), y)
        meter_state = meter.step(meter_state, target / max(total, 1))
        return (y, target, meter_state), dynamics.observe(y)

    (y1, _, meter_state), saved = jax.lax.scan(
        segment, (y0, jnp.asarray(0, targets.dtype), meter.init()), targets)
    meter.close(meter_state)
    result = check_finite(RESULTS.successful, saved)
    return Raw(targets.astype(jnp.result_type(float)), saved, dynamics.final(y1), result,
               {"num_steps": jnp.asarray(total)})


class AbstractClosedForm(AbstractDynamics):
    """A solution known in closed form at any time."""

    @abc.abstractmethod
    def evaluate(self, ts: jax.Array) -> dict[str, Any]:
        """The observables at the times `ts` (stacked along the first axis)."""

    def run(self, y0, settings):
        return _evaluate(self, jnp.asarray(settings.ts))


@eqx.filter_jit
def _evaluate(dynamics, ts):
    saved = dynamics.evaluate(ts)
    result = check_finite(RESULTS.successful, saved)
    return Raw(ts, saved, None, result, {"num_steps": jnp.asarray(0)})


@functools.singledispatch
def solve(problem: Any, solver: Any = None, **options: Any) -> Any:
    """Solve `problem` with `solver` (SciML's `solve(prob, alg; kwargs...)`).

    **Arguments:**

    - `problem`: any nthdyn problem (`GradientFlowProblem`, `GradientDescentProblem`,
      `NTHProblem`, `KernelRegressionProblem`) or an `EnsembleProblem`.
    - `solver`: the method; `None` picks the problem's default (see each problem).
    - `saveat`, `rtol`, `atol`, `norm`, `max_steps`, `dt0`, `progress`, `throw`:
      the same options with the same defaults for every problem (see
      `docs/solve.md`); problems add their own (`save_ntk`, `kernels`, ...).

    **Returns:** a `Solution` (an `xarray.Dataset` for an `EnsembleProblem`).

    Works inside `jax.jit` and under `eqx.filter_vmap` over a batch of networks:
    the status is data (`Solution.result`, a `RESULTS` item).
    """
    known = ["EnsembleProblem", "GradientDescentProblem", "GradientFlowProblem",
             "KernelRegressionProblem", "NTHProblem"]
    raise TypeError(f"solve has no method for {type(problem).__name__}; pass one of {known}.")


def solve_problem(problem: Any, solver: Any = None, **options: Any) -> Solution:
    """The core path of `solve` for one problem (see the module docstring)."""
    check_float64()
    settings = check_options(problem, options)
    dynamics, y0 = problem.dynamics(solver, settings)
    raw = dynamics.run(y0, settings)
    solution = Solution(
        problem=problem, t=raw.t, network=raw.final, result=raw.result, stats=raw.stats,
        solver=dynamics.method, options={**settings.record(problem.discrete), **dynamics.record()},
        **raw.observed,
    )
    if settings.throw:
        solution = _throw(problem, solution, settings)
    return solution


def _throw(problem, solution, settings):
    if is_traced(solution.result):  # inside jit/vmap: raise at run time with the status' message
        f = solution.result.error_if(solution.f, solution.result != RESULTS.successful)
        return eqx.tree_at(lambda s: s.f, solution, f)
    status = int(code(solution.result))
    if status:
        name = RETCODES[status]
        raise SolverError(f"{name}: {problem.failure_message(name, solution, settings)}")
    return solution


def last_finite_time(t: Any, f: Any) -> float:
    """The last save time at which every output is finite (NaN if none)."""
    ts, f = np.asarray(t), np.asarray(f)
    good = np.all(np.isfinite(f), axis=-1) & np.isfinite(ts)
    return float(ts[good][-1]) if good.any() else float("nan")

