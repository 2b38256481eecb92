"""`solve(problem, solver, **options)`: one generic entry point, a method per problem.

Gradient flow, Huang & Yau eq. (3): `d theta/dt = -grad L(theta)`, integrated by
diffrax with adaptive steps. Only observables are saved (outputs, their time
derivative, the loss, optionally the NTK), never the parameter trajectory: a
width-4096 network has 10^7 parameters.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from ._checks import positive_float, positive_int
from ._kernels import ntk_structured, ntk_jacobian
from ._network import AbstractLayeredNetwork, parameter_count, trainable
from ._problems import AbstractProblem, GradientDescentProblem, GradientFlowProblem
from ._solution import RETCODES, Solution, SolverError

#: Above this many parameters an implicit solver's dense Jacobian would not fit.
IMPLICIT_MAX_PARAMETERS = 20_000


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
            stacklevel=4,  # check_float64 <- method <- singledispatch <- caller
        )


@functools.singledispatch
def solve(problem: AbstractProblem, solver: Any = None, **options: Any) -> Solution:
    """Solve `problem` with `solver` (SciML's `solve(prob, alg; kwargs...)`).

    Methods exist for every problem type of nthdyn (`GradientFlowProblem`,
    `GradientDescentProblem`, `NTHProblem`, ...; `solve.registry` lists them).
    """
    known = sorted(t.__name__ for t in solve.registry if t is not object)
    raise TypeError(
        f"solve has no method for {type(problem).__name__}; pass one of {known}."
    )


def _loss_and_outputs(static, X, y):
    def loss(params):
        f = eqx.combine(params, static)(X)
        return 0.5 * jnp.mean((f - y) ** 2)

    return loss


def _observe(params, static, X, y, X_test, velocity, save_ntk):
    """Outputs, loss, NTK, and the outputs' derivative along `velocity` (a jvp;
    none when `velocity` is None)."""
    def outputs(p):
        net = eqx.combine(p, static)
        return net(X), (None if X_test is None else net(X_test))

    if velocity is None:
        f, f_test = outputs(params)
        observed = dict(f=f, f_test=f_test)
    else:
        (f, f_test), (dfdt, dfdt_test) = jax.jvp(outputs, (params,), (velocity,))
        observed = dict(f=f, dfdt=dfdt, f_test=f_test, dfdt_test=dfdt_test)
    observed["loss"] = 0.5 * jnp.mean((f - y) ** 2)
    if save_ntk:
        net = eqx.combine(params, static)
        kernel = ntk_structured if isinstance(net, AbstractLayeredNetwork) else ntk_jacobian
        observed["ntk"] = kernel(net, X)
    return observed


@eqx.filter_jit
def _integrate_flow(params, static, X, y, X_test, t0, t1, ts, solver, controller,
                    dt0, max_steps, progress_meter, save_ntk):
    grad_loss = jax.grad(_loss_and_outputs(static, X, y))

    def vector_field(t, p, args):  # eq. (3)-(5)
        return jax.tree_util.tree_map(jnp.negative, grad_loss(p))

    def observe(t, p, args):
        return _observe(p, static, X, y, X_test, vector_field(t, p, args), save_ntk)

    saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=observe), diffrax.SubSaveAt(t1=True)])
    return diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field), solver, t0, t1, dt0, params,
        saveat=saveat, stepsize_controller=controller, max_steps=max_steps,
        throw=False, progress_meter=progress_meter,
    )


def save_times(saveat: Any, t0: float, t1: float, default_count: int = 101,
               span: str = "tspan") -> jax.Array:
    """Validated, sorted save times within `[t0, t1]` (`span` names the range in errors)."""
    if saveat is None:
        return jnp.linspace(t0, t1, default_count)
    ts = np.atleast_1d(np.asarray(saveat, dtype=float))
    if ts.ndim != 1 or ts.size == 0 or not np.all(np.isfinite(ts)):
        raise ValueError(f"saveat={saveat!r}: pass a non-empty 1-d array of finite times.")
    if np.any(np.diff(ts) <= 0):
        raise ValueError(f"saveat: times must be strictly increasing, got {ts}.")
    if ts[0] < t0 or ts[-1] > t1:
        raise ValueError(
            f"saveat: times must lie in {span}=({t0:g}, {t1:g}); got {ts[0]:g} .. {ts[-1]:g}."
        )
    return jnp.asarray(ts)


def _check_solver(solver: Any, n_params: int, *, limit: int = IMPLICIT_MAX_PARAMETERS,
                  state: str = "parameter-space flow") -> diffrax.AbstractSolver:
    """An adaptive diffrax solver instance (Tsit5 for None); an implicit one only
    if the dense Jacobian of a state of `n_params` entries is affordable."""
    if solver is None:
        return diffrax.Tsit5()
    if isinstance(solver, type):
        raise TypeError(f"solver={solver.__name__}: pass an instance, e.g. {solver.__name__}().")
    if not isinstance(solver, diffrax.AbstractAdaptiveSolver):
        raise TypeError(
            f"solver={solver!r}: pass an adaptive diffrax solver such as nthdyn.Tsit5(), "
            "nthdyn.Dopri8() or nthdyn.Kvaerno5()."
        )
    if isinstance(solver, diffrax.AbstractImplicitSolver) and n_params > limit:
        raise ValueError(
            f"solver={type(solver).__name__}() is implicit: its Newton step builds a dense "
            f"{n_params} x {n_params} Jacobian of the {state} (at most {limit} entries are "
            "allowed). Use an explicit solver (Tsit5, Dopri8); implicit solvers fit small "
            "stiff systems such as the low orders of the hierarchy."
        )
    return solver


def _retcode(result: Any, *arrays: Any) -> int:
    if result == diffrax.RESULTS.max_steps_reached:
        code = 1
    elif result != diffrax.RESULTS.successful:
        code = 3
    else:
        code = 0
    if code != 1 and not all(bool(np.all(np.isfinite(a))) for a in arrays if a is not None):
        code = 2
    return code


def _raise_for(code: int, message: str) -> None:
    if code:
        raise SolverError(f"{RETCODES[code]}: {message}")


@solve.register
def _solve_flow(
    problem: GradientFlowProblem,
    solver: Any = None,
    *,
    saveat: Any = None,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    dt0: float | None = None,
    max_steps: int = 100_000,
    save_ntk: bool = False,
    progress: bool = False,
    throw: bool = True,
) -> Solution:
    """Integrate the gradient flow eq. (3)-(5) of `problem`.

    **Arguments:**

    - `solver`: an adaptive diffrax solver; `Tsit5()` by default (`Dopri8()` for
      tolerances near 1e-13).
    - `saveat`: times at which to save; 101 evenly spaced by default. The solver
      steps exactly to each save time, so saved values carry the solver's own
      accuracy rather than an interpolant's.
    - `rtol`, `atol`: tolerances of the PID step-size controller, applied to the
      Euclidean norm of the parameter error scaled by `atol + rtol |theta_i|`, so
      that they bound the error of the outputs independently of the width.
    - `dt0`: the first step; chosen automatically by default.
    - `max_steps`: the most steps before giving up.
    - `save_ntk`: also save the NTK on the training set at each save time.
    - `progress`: show a progress bar (diffrax's `TqdmProgressMeter`).
    - `throw`: raise `SolverError` on failure (else return with `retcode != 0`).
    """
    check_float64()
    settings = _flow_settings(problem, solver, saveat=saveat, rtol=rtol, atol=atol, dt0=dt0,
                              max_steps=max_steps, save_ntk=save_ntk, progress=progress)
    return _flow_solution(problem, _flow_integrate(problem, settings), settings, throw=throw)


def _flow_settings(problem, solver, *, saveat, rtol, atol, dt0, max_steps, save_ntk,
                   progress) -> dict[str, Any]:
    """The validated options of a gradient-flow solve (shared with ensembles)."""
    solver = _check_solver(solver, parameter_count(problem.network))
    t0, t1 = problem.tspan
    ts = save_times(saveat, t0, t1)
    rtol, atol = positive_float(rtol, "rtol"), positive_float(atol, "atol")
    max_steps = positive_int(max_steps, "max_steps")
    # The Euclidean (not RMS) norm over all P parameters: |f error| <= ||grad f|| ||theta error||_2
    # with ||grad f||^2 = K2(x, x) = O(1), so the tolerance bounds the error of the outputs
    # whatever P is. The RMS norm would let it grow like sqrt(P) (3e3 at P = 1e7).
    controller = diffrax.ClipStepSizeController(
        diffrax.PIDController(rtol=rtol, atol=atol, norm=optx.two_norm), step_ts=ts
    )
    meter = diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter()
    return dict(solver=solver, t0=t0, t1=t1, ts=ts, rtol=rtol, atol=atol, dt0=dt0,
                max_steps=max_steps, controller=controller, meter=meter,
                save_ntk=bool(save_ntk))


def _flow_integrate(problem, settings):
    """The diffrax solution of the flow: a pure JAX function of the problem's
    arrays, so ensembles can `vmap` it over networks of one shape."""
    params, static = trainable(problem.network)
    data, s = problem.data, settings
    # times as arrays, so that a new tspan does not recompile
    return _integrate_flow(params, static, data.X, data.y, problem.test,
                           jnp.asarray(s["t0"], float), jnp.asarray(s["t1"], float),
                           s["ts"], s["solver"], s["controller"], s["dt0"], s["max_steps"],
                           s["meter"], s["save_ntk"])


def _flow_solution(problem, sol, settings, *, throw) -> Solution:
    """A `Solution` from one (unbatched) diffrax solution of `_flow_integrate`."""
    solver, t1, max_steps = settings["solver"], settings["t1"], settings["max_steps"]
    rtol, atol = settings["rtol"], settings["atol"]
    static = trainable(problem.network)[1]
    observed, final = sol.ys
    code = _retcode(sol.result, observed["f"], observed["loss"])
    stats = {k: int(sol.stats[k]) for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")}
    if throw:
        last = _last_finite_time(sol.ts[0], observed["f"])
        _raise_for(code, {
            1: f"max_steps={max_steps} steps were not enough to reach t={t1} "
               f"(the last save time reached was t={last}). Raise max_steps, loosen rtol/atol "
               f"(now {rtol:g}/{atol:g}), or shorten tspan.",
            2: f"the outputs became non-finite after t={last}. Lower the weight scales "
               "or check the data; the flow itself cannot blow up for a smooth network.",
            3: f"diffrax reported: {sol.result}.",
        }.get(code, ""))
    network = eqx.combine(jax.tree_util.tree_map(lambda leaf: leaf[-1], final), static)
    return Solution(
        problem=problem, t=sol.ts[0], f=observed["f"], dfdt=observed["dfdt"],
        loss=observed["loss"], ntk=observed.get("ntk"), f_test=observed["f_test"],
        dfdt_test=observed["dfdt_test"], network=network, retcode=code, stats=stats,
        solver=type(solver).__name__,
        options=dict(rtol=rtol, atol=atol, max_steps=max_steps,
                     save_ntk=int(settings["save_ntk"])),
    )


def _last_finite_time(ts, f) -> float:
    good = np.all(np.isfinite(np.asarray(f)), axis=1) & np.isfinite(np.asarray(ts))
    return float(np.asarray(ts)[good][-1]) if good.any() else float("nan")


@eqx.filter_jit
def _descend(params, static, X, y, learning_rate, steps):
    """`steps` gradient-descent steps (a dynamic count, so one compilation serves
    every segment between save points)."""
    grad_loss = jax.grad(_loss_and_outputs(static, X, y))

    def step(_, p):
        g = grad_loss(p)
        return jax.tree_util.tree_map(lambda a, b: a - learning_rate * b, p, g)

    return jax.lax.fori_loop(0, steps, step, params)


@eqx.filter_jit
def _observe_descent(params, static, X, y, X_test, save_ntk):
    return _observe(params, static, X, y, X_test, None, save_ntk)


@solve.register
def _solve_descent(
    problem: GradientDescentProblem,
    solver: Any = None,
    *,
    saveat: Any = None,
    save_ntk: bool = False,
    progress: bool = False,
    throw: bool = True,
) -> Solution:
    """Run discrete gradient descent; `saveat` lists the steps to save (all steps
    `0..steps` by default). `solver` must be `None`: the method is the problem."""
    check_float64()
    if solver is not None:
        raise TypeError(
            f"solver={solver!r}: GradientDescentProblem takes no solver (the update rule "
            "is the problem); use GradientFlowProblem for an ODE solver."
        )
    steps = np.asarray(save_times(saveat, 0, problem.steps, problem.steps + 1, span="steps"))
    if not np.all(steps == np.round(steps)):
        raise ValueError(f"saveat: gradient-descent steps must be integers, got {steps}.")
    steps = steps.astype(int)
    params, static = trainable(problem.network)
    data = problem.data
    records, done = [], 0
    iterator = steps
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(steps, desc="gradient descent", unit="save")
    for target in iterator:
        params = _descend(params, static, data.X, data.y, jnp.asarray(problem.learning_rate),
                          jnp.asarray(target - done))
        done = int(target)
        records.append(_observe_descent(params, static, data.X, data.y, problem.test, bool(save_ntk)))
    observed = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *records)
    code = _retcode(diffrax.RESULTS.successful, observed["f"], observed["loss"])
    if throw:
        _raise_for(code, f"gradient descent diverged (the outputs became non-finite) with "
                         f"learning_rate={problem.learning_rate}: lower the learning rate.")
    return Solution(
        problem=problem, t=jnp.asarray(steps, dtype=jnp.result_type(float)), f=observed["f"],
        dfdt=None, loss=observed["loss"], ntk=observed.get("ntk"), f_test=observed["f_test"],
        dfdt_test=None, network=eqx.combine(params, static), retcode=code,
        stats={"num_steps": int(problem.steps)}, solver="GradientDescent",
        options=dict(learning_rate=problem.learning_rate, save_ntk=int(bool(save_ntk))),
    )
