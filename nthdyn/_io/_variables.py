"""One registry of the variables and coordinates that nthdyn writes: dimensions,
`long_name`, `units` and the equation each comes from. Every Dataset builder (single
solves, ensembles, comparisons, limits) takes its metadata from here; a problem may
relabel a variable (the hierarchy's `ntk` is `K~2`, not the network's NTK).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._solve import RETCODES


class Variable(NamedTuple):
    dims: tuple[str, ...]
    long_name: str
    units: str = "1"
    equation: str = ""


VARIABLES: dict[str, Variable] = {
    # solutions
    "f": Variable(("time", "sample"), "network output on the training inputs f(x_a)",
                  equation="Huang & Yau eq. (2)"),
    "dfdt": Variable(("time", "sample"), "time derivative of f, -1/n K2 (f - y)",
                     equation="Huang & Yau eq. (6)"),
    "loss": Variable(("time",), "training loss L = 1/(2n) sum (f - y)^2",
                     equation="Huang & Yau Section 1"),
    "ntk": Variable(("time", "sample", "sample_b"), "neural tangent kernel K2(x_a, x_b)",
                    equation="Huang & Yau eq. (7)"),
    "f_test": Variable(("time", "test"), "network output on the test inputs f(x)",
                       equation="Huang & Yau eq. (2)"),
    "dfdt_test": Variable(("time", "test"), "time derivative of the test outputs",
                          equation="Huang & Yau eq. (6), (22)"),
    "X": Variable(("sample", "input_dim"), "training input x_a"),
    "y": Variable(("sample",), "training label y_a"),
    "X_test": Variable(("test", "input_dim"), "test input x"),
    "retcode": Variable((), "solver status (nthdyn.RESULTS)"),
    "message": Variable((), "error message of a failed member ('' on success)"),
    "num_steps": Variable((), "solver statistic: steps taken"),
    "num_accepted_steps": Variable((), "solver statistic: accepted steps"),
    "num_rejected_steps": Variable((), "solver statistic: rejected steps"),
    # comparisons of the flow with the hierarchy
    "f_nth": Variable(("time", "sample"), "output f~ of the truncated NTH",
                      equation="Huang & Yau eq. (15)"),
    "ntk_nth": Variable(("time", "sample", "sample_b"), "K~2 of the truncated NTH",
                        equation="Huang & Yau eq. (15)"),
    "err_f": Variable(("time",), "||f - f~||_2 over the training set",
                      equation="Huang & Yau eq. (18)"),
    "err_K2": Variable(("time",), "max |K2 - K~2|", equation="Huang & Yau eq. (19)"),
    "err_f_test": Variable(("time",), "||f_x - f~_x||_2 over the test points",
                           equation="Huang & Yau eq. (22)"),
    # kernels at initialization, over seeds (estimate_kernel_limit)
    "K_mean": Variable(("width",), "seed mean of m^(r/2-1) K(r) at initialization",
                       equation="Huang & Yau eq. (11)"),
    "K_std": Variable(("width",), "seed standard deviation of m^(r/2-1) K(r)"),
    "K_stderr": Variable(("width",), "standard error of the seed mean of m^(r/2-1) K(r)"),
    "K_limit": Variable((), "limiting NTK (infinite width)", equation="Jacot et al. Thm. 1"),
    "z": Variable(("width",), "(seed mean - limit) / standard error"),
    # regimes of two-layer networks (GradientFlowProblem, save_regime=True)
    "movement": Variable(("time", "layer"),
                         "relative movement ||P_k(t) - P_k(0)||_F / ||P_k(0)||_F of each trained "
                         "linear map", equation="Fang, Dong & Zhang Section IV, Fig. 7"),
    "ntk_change": Variable(("time",), "relative change of the NTK ||K2(t) - K2(0)||_F / ||K2(0)||_F",
                           equation="Huang & Yau eq. (7); Fang, Dong & Zhang Table I"),
    "particle_u": Variable(("time", "neuron"), "readout weight u_j of each hidden neuron",
                           equation="Fang, Dong & Zhang eq. (1)"),
    "particle_theta": Variable(("time", "neuron", "input_dim"),
                               "incoming weights theta_j of each hidden neuron",
                               equation="Fang, Dong & Zhang eq. (1)"),
    "wasted_fraction": Variable(("time",), "fraction of neurons with |u_j| below the threshold",
                                equation="Fang, Dong & Zhang Fig. 6(d), (g)"),
    # discrete gradient descent: stability edge and phase (nthdyn._spectrum)
    "lambda_max": Variable(("time",), "largest eigenvalue lambda_max of the NTK K2",
                           equation="stability edge eta = 2n / lambda_max (L = 1/(2n) sum r^2)"),
    "phase": Variable((), "phase of a gradient-descent run (0 lazy, 1 catapult, 2 divergent)",
                      equation="Lewkowycz et al. 2020; criteria in nthdyn.classify_phase"),
}

COORDINATES: dict[str, str] = {
    "time": "training time t",
    "sample": "training sample index",
    "sample_b": "training sample index (second kernel slot)",
    "test": "test point index",
    "seed": "seed of the member: network key fold_in(key(master_seed), seed)",
    "width": "hidden width m",
    "depth": "number of hidden layers H",
    "order": "truncation order p of the Neural Tangent Hierarchy",
    "learning_rate": "learning rate eta",
    "activation": "activation function sigma",
    "layer": "index k of the trained linear map P_k (TwoLayer: 0 theta, 1 u)",
    "neuron": "hidden neuron (particle) index j",
    "alpha": "scale alpha of the two-layer network",
}


def attributes(name: str, *, long_name: str | None = None, equation: str | None = None,
               **extra: Any) -> dict[str, Any]:
    """The attributes of variable `name` (`long_name`, `units`, `equation`, and CF
    flags for status codes), with the problem's relabelling if any."""
    entry = VARIABLES.get(name, Variable((), name))
    attrs: dict[str, Any] = {"long_name": long_name or entry.long_name}
    if name != "message":  # a string variable has no units (CF)
        attrs["units"] = entry.units
    if equation or entry.equation:
        attrs["equation"] = equation or entry.equation
    if name == "retcode":
        attrs["flag_values"] = np.array(list(RETCODES), dtype=np.int32)
        attrs["flag_meanings"] = " ".join(RETCODES.values())
    attrs.update(extra)
    return attrs


def variable(name: str, values: Any, *, lead: tuple[str, ...] = (), dims: tuple[str, ...] | None = None,
             long_name: str | None = None, equation: str | None = None) -> tuple:
    """`(dims, values, attrs)` of variable `name` for an `xarray.Dataset`; `lead`
    dimensions (e.g. `("seed",)`) go first."""
    entry = VARIABLES.get(name, Variable((), name))
    dims = lead + (entry.dims if dims is None else dims)
    return dims, np.asarray(values), attributes(name, long_name=long_name, equation=equation)


def coordinate(name: str, values: Any, *, long_name: str | None = None) -> tuple:
    """`(name, values, attrs)` of a dimension coordinate."""
    return (name, np.asarray(values), {"long_name": long_name or COORDINATES.get(
        name, f"sweep axis {name}"), "units": "1"})
