"""The truncated Neural Tangent Hierarchy, Huang & Yau eq. (15) and (22).

With residual `r = f~ - y`,

    d f~/dt      = -1/n K~(2) r,
    d K~(s)/dt   = -1/n K~(s+1)[..., r]      for 2 <= s <= p - 1,
    d K~(p)/dt   = 0,

started from the network's outputs and kernels at `t = 0`. Test points `x` enter
as an extra first slot (eq. (22)): `f~_x` and `K~(s)(x, X, ..., X)` follow the
same equations. Once the kernels `K(2..p)` at `t = 0` exist, the ODE's cost does
not depend on the width.

For `p = 3`, `K~(2)(t) = K(2) - 1/n K(3)[R(t)]` with `R = int_0^t r`, so the
system reduces to `(r, R)` (Section 4, item 3; the printed formula has lost a
sign and a factor `1/n`):

    dr/dt = -1/n K(2) r + 1/n^2 K(3)[r, R],     dR/dt = r,

where `K(3)[r, R]_a = sum_{c,b} K(3)(a, c, b) r_c R_b`.
"""

from __future__ import annotations

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jaxtyping import Array, Float

from ._checks import positive_float, positive_int
from ._data import TrainingSet
from ._hierarchy import MAX_KERNEL_BYTES, check_order, contract_last, hierarchy_kernel
from ._network import AbstractNetwork
from ._io import provenance
from ._problems import AbstractProblem, _check_common, _check_tspan
from ._solution import Solution
from ._solve import _check_solver, _raise_for, _retcode, check_float64, save_times, solve

#: The automatic solver choice uses an implicit method only for states this small.
IMPLICIT_MAX_STATE = 1000
#: A user's implicit solver is refused above this state size (a 10^4 x 10^4 Jacobian is 0.8 GB).
IMPLICIT_MAX_DENSE = 10_000
#: ... and only when the linear part is this stiff: lambda_max(K2) (t1 - t0) / n.
STIFFNESS_THRESHOLD = 1e4


class NTHProblem(AbstractProblem):
    """The p-level truncated hierarchy, eq. (15), for `network` and `data`.

    **Arguments:**

    - `network`: the network at `t = 0` (its kernels start the hierarchy).
    - `data`: a `TrainingSet` (or an `(X, y)` pair).
    - `order`: the truncation level `p >= 2`; `K~(p)` is frozen. `p = 2` is kernel
      regression with the finite-width NTK; `p >= 3` needs a smooth activation.
    - `tspan`: `(t0, t1)`.
    - `test`: optional test inputs, evolved by eq. (22).
    """

    network: AbstractNetwork
    data: TrainingSet
    order: int = eqx.field(static=True)
    tspan: tuple[float, float] = eqx.field(static=True)
    test: Float[Array, "t d"] | None = None

    def __init__(self, network, data, order, tspan, *, test=None):
        self.network, self.data, self.test = _check_common(network, data, test)
        self.order = check_order(self.network, order)
        self.tspan = _check_tspan(tspan)


def initial_kernels(problem: NTHProblem, *, max_bytes: int = MAX_KERNEL_BYTES):
    """`(f(X), [K(2), ..., K(p)])` at `t = 0`, and the same with test points in
    the first slot (`None` without test points)."""
    net, X, p = problem.network, problem.data.X, problem.order
    kernels = [hierarchy_kernel(net, X, r, max_bytes=max_bytes) for r in range(2, p + 1)]
    if problem.test is None:
        return (net(X), kernels), None
    test = [hierarchy_kernel(net, X, r, X_first=problem.test, max_bytes=max_bytes)
            for r in range(2, p + 1)]
    return (net(X), kernels), (net(problem.test), test)


def _general_field(t, state, args):
    """Right-hand side of eq. (15) and (22); `args["top"]` are the frozen `K(p)`."""
    y = args["y"]
    n = y.shape[0]
    r = state["f"] - y
    kernels = state.get("K", ()) + (args["top"],)
    out = {"f": -kernels[0] @ r / n}
    if "K" in state:
        out["K"] = tuple(-contract_last(k, r) / n for k in kernels[1:])
    if "fx" in state:
        kx = state.get("Kx", ()) + (args["top_test"],)
        out["fx"] = -kx[0] @ r / n
        if "Kx" in state:
            out["Kx"] = tuple(-contract_last(k, r) / n for k in kx[1:])
    return out


def _general_observe(t, state, args):
    rates = _general_field(t, state, args)
    return dict(f=state["f"], dfdt=rates["f"], ntk=(state.get("K", ()) + (args["top"],))[0],
                f_test=state.get("fx"), dfdt_test=rates.get("fx"))


def _reduced_velocity(K2, K3, r, R):
    n = r.shape[0]
    return -K2 @ r / n + jnp.einsum("acb,c,b->a", K3, r, R) / n**2


def _reduced_field(t, state, args):
    """The p = 3 system in `(r, R)` (module docstring)."""
    r, R = state["r"], state["R"]
    out = {"r": _reduced_velocity(args["K2"], args["K3"], r, R), "R": r}
    if "fx" in state:
        out["fx"] = _reduced_velocity(args["Kx2"], args["Kx3"], r, R)
    return out


def _reduced_observe(t, state, args):
    rates = _reduced_field(t, state, args)
    n = state["r"].shape[0]
    return dict(f=state["r"] + args["y"], dfdt=rates["r"],
                ntk=args["K2"] - contract_last(args["K3"], state["R"]) / n,
                f_test=state.get("fx"), dfdt_test=rates.get("fx"))


@eqx.filter_jit
def _integrate(field, observe, y0, args, t0, t1, ts, solver, controller, dt0, max_steps, meter):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(field), solver, t0, t1, dt0, y0, args=args,
        saveat=diffrax.SaveAt(ts=ts, fn=observe), stepsize_controller=controller,
        max_steps=max_steps, throw=False, progress_meter=meter,
    )


def choose_solver(state_size: int, stiffness: float) -> diffrax.AbstractSolver:
    """The automatic rule: `Kvaerno5` (implicit, L-stable) when the state is small
    enough for a dense Jacobian (`<= IMPLICIT_MAX_STATE`) and the linear part is
    stiff (`lambda_max(K2) (t1 - t0) / n > STIFFNESS_THRESHOLD`); `Tsit5` otherwise."""
    if state_size <= IMPLICIT_MAX_STATE and stiffness > STIFFNESS_THRESHOLD:
        return diffrax.Kvaerno5()
    return diffrax.Tsit5()


@solve.register
def _solve_nth(
    problem: NTHProblem,
    solver: Any = None,
    *,
    saveat: Any = None,
    rtol: float = 1e-12,
    atol: float = 1e-12,
    dt0: float | None = None,
    max_steps: int = 1_000_000,
    reduced: bool | None = None,
    max_bytes: int = MAX_KERNEL_BYTES,
    progress: bool = False,
    throw: bool = True,
) -> Solution:
    """Solve the truncated hierarchy eq. (15) (and (22) for test points).

    **Arguments:**

    - `solver`: any adaptive diffrax solver; `None` chooses by `choose_solver`.
    - `saveat`, `rtol`, `atol`, `dt0`, `max_steps`, `progress`, `throw`: as for
      the gradient flow; the tolerances now apply to outputs and kernels.
    - `reduced`: for `order=3`, solve the `(r, R)` system (the default) instead
      of evolving `K~(2)`; the two agree (tested).
    - `max_bytes`: the cap on each kernel tensor.

    The solution's `ntk` is `K~(2)(t)`; `network` is `None` (the hierarchy does
    not move parameters).
    """
    check_float64()
    p, n, y = problem.order, problem.data.n, problem.data.y
    t0, t1 = problem.tspan
    ts = save_times(saveat, t0, t1)
    rtol, atol = positive_float(rtol, "rtol"), positive_float(atol, "atol")
    max_steps = positive_int(max_steps, "max_steps")
    if reduced is None:
        reduced = p == 3
    if reduced and p != 3:
        raise ValueError(f"reduced=True is the p = 3 system; this problem has order={p}.")
    (f0, kernels), test = initial_kernels(problem, max_bytes=max_bytes)
    if reduced:
        state = {"r": f0 - y, "R": jnp.zeros_like(f0)}
        args = {"y": y, "K2": kernels[0], "K3": kernels[1]}
        if test is not None:
            state["fx"] = test[0]
            args["Kx2"], args["Kx3"] = test[1]
        field, observe = _reduced_field, _reduced_observe
    else:
        # Empty groups are left out: diffrax's buffers must be arrays (p = 2).
        state = {"f": f0, "K": tuple(kernels[:-1])} if p > 2 else {"f": f0}
        args = {"y": y, "top": kernels[-1]}
        if test is not None:
            state["fx"] = test[0]
            if p > 2:
                state["Kx"] = tuple(test[1][:-1])
            args["top_test"] = test[1][-1]
        field, observe = _general_field, _general_observe
    size = sum(leaf.size for leaf in jax.tree_util.tree_leaves(state))
    if solver is None:
        stiffness = float(np.linalg.eigvalsh(np.asarray(kernels[0]))[-1]) * (t1 - t0) / n
        solver = choose_solver(size, stiffness)
    else:
        solver = _check_solver(solver, size, limit=IMPLICIT_MAX_DENSE, state="hierarchy's state")
    controller = diffrax.ClipStepSizeController(diffrax.PIDController(rtol=rtol, atol=atol), step_ts=ts)
    meter = diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter()
    sol = _integrate(field, observe, state, args, jnp.asarray(t0, float), jnp.asarray(t1, float),
                     ts, solver, controller, dt0, max_steps, meter)
    observed = sol.ys
    code = _retcode(sol.result, observed["f"], observed["ntk"])
    if throw:
        _raise_for(code, {
            1: f"max_steps={max_steps} steps were not enough for the order-{p} hierarchy "
               f"to reach t={t1}: raise max_steps, loosen rtol/atol (now {rtol:g}/{atol:g}), "
               "or try a stiff solver such as nthdyn.Kvaerno5().",
            2: "the truncated hierarchy produced non-finite values: the truncation is not "
               "valid this far (Theorem 2.6 needs t << sqrt(m)); shorten tspan or raise order.",
            3: f"diffrax reported: {sol.result}.",
        }.get(code, ""))
    stats = {k: int(sol.stats[k]) for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")}
    return Solution(
        problem=problem, t=sol.ts, f=observed["f"], dfdt=observed["dfdt"], loss=0.5 * jnp.mean(
            (observed["f"] - y) ** 2, axis=1), ntk=observed["ntk"], f_test=observed["f_test"],
        dfdt_test=observed["dfdt_test"], network=None, retcode=code, stats=stats,
        solver=type(solver).__name__,
        options=dict(rtol=rtol, atol=atol, max_steps=max_steps, order=p, reduced=int(reduced),
                     state_size=int(size)),
    )


def compare(flow: Solution, nth: Solution) -> xr.Dataset:
    """The exact flow against the truncated hierarchy, over time.

    `err_f = ||f - f~||_2` over the training set (eq. (18)), `err_K2 = max_ab
    |K2 - K~2|` (eq. (19)), and `err_f_test = ||f_x - f~_x||_2` over test points.
    The flow must have been solved with `save_ntk=True`, at the same save times.
    The dataset has `order` and `width` as scalar coordinates, so comparisons
    stack along them (`xarray.concat(..., dim="order")`).
    """
    if not isinstance(nth.problem, NTHProblem):
        raise TypeError("compare(flow, nth): the second solution must solve an NTHProblem.")
    if flow.ntk is None:
        raise ValueError("compare: solve the flow with save_ntk=True to compare kernels.")
    if flow.t.shape != nth.t.shape or not np.allclose(flow.t, nth.t, rtol=0, atol=1e-12):
        raise ValueError("compare: the two solutions must be saved at the same times (saveat).")
    same_data = all(np.array_equal(getattr(flow.problem.data, a), getattr(nth.problem.data, a))
                    for a in ("X", "y"))
    if not same_data or flow.problem.network.config() != nth.problem.network.config():
        raise ValueError("compare: the flow and the hierarchy must start from the same network "
                         "and training set (the problem's network and data differ).")
    dims, dims_k = ("time", "sample"), ("time", "sample", "sample_b")

    def var(dims, values, long_name):
        return dims, np.asarray(values), {"long_name": long_name, "units": "1"}

    data = {
        "f": var(dims, flow.f, "network output f (exact gradient flow)"),
        "f_nth": var(dims, nth.f, "output f~ of the truncated NTH (eq. 15)"),
        "ntk": var(dims_k, flow.ntk, "NTK K2 along the exact flow"),
        "ntk_nth": var(dims_k, nth.ntk, "K~2 of the truncated NTH"),
        "err_f": var(("time",), jnp.linalg.norm(flow.f - nth.f, axis=1),
                     "||f - f~||_2 over the training set (eq. 18)"),
        "err_K2": var(("time",), jnp.max(jnp.abs(flow.ntk - nth.ntk), axis=(1, 2)),
                      "max |K2 - K~2| (eq. 19)"),
    }
    coords = {"time": ("time", np.asarray(flow.t), {"long_name": "training time t", "units": "1"}),
              "order": ((), nth.problem.order, {"long_name": "truncation order p", "units": "1"})}
    width = getattr(flow.problem.network, "width", None)
    if width is not None:
        coords["width"] = ((), width, {"long_name": "hidden width m", "units": "1"})
    if flow.f_test is not None and nth.f_test is not None:
        data["err_f_test"] = var(("time",), jnp.linalg.norm(flow.f_test - nth.f_test, axis=1),
                                 "||f_x - f~_x||_2 over the test points (eq. 22)")
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(provenance(
        f"exact gradient flow vs order-{nth.problem.order} truncated NTH",
        {"flow": flow.problem.config(), "nth": nth.problem.config(),
         "flow_options": flow.options, "nth_options": nth.options},
    ))
    return ds

