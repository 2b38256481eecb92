"""The exact flow against the truncated hierarchy, over time."""

from __future__ import annotations

import jax
import numpy as np

from .._lazy import xr
from .._network import trainable
from .._solve import Solution
from ._provenance import provenance
from ._variables import coordinate, variable


def same_parameters(a, b) -> bool:
    """Whether two networks have equal parameters (by value) and structure."""
    if type(a) is not type(b) or a.hyperparameters() != b.hyperparameters():
        return False
    leaves_a, tree_a = jax.tree_util.tree_flatten(trainable(a)[0])
    leaves_b, tree_b = jax.tree_util.tree_flatten(trainable(b)[0])
    if tree_a != tree_b:
        return False
    return all(np.shape(x) == np.shape(y) and np.array_equal(x, y)
               for x, y in zip(leaves_a, leaves_b))


def compare(flow: Solution, nth: Solution) -> xr.Dataset:
    """The exact flow against the truncated hierarchy, over time.

    `err_f = ||f - f~||_2` over the training set (eq. (18)), `err_K2 = max_ab
    |K2 - K~2|` (eq. (19)), and `err_f_test = ||f_x - f~_x||_2` over test points.
    The flow must have been solved with `save_ntk=True`, at the same save times,
    from the same network parameters (compared by value) and training set. The
    dataset has `order` and `width` as scalar coordinates, so comparisons stack
    along them (`xarray.concat(..., dim="order")`).
    """
    from .._problems import GradientFlowProblem, NTHProblem

    for name, solution in (("flow", flow), ("nth", nth)):
        if not isinstance(solution, Solution):
            raise TypeError(f"compare(flow, nth): {name}={type(solution).__name__}; pass the "
                            "Solutions of nthdyn.solve(GradientFlowProblem(...), save_ntk=True) "
                            "and of nthdyn.solve(NTHProblem(...)).")
    if not isinstance(flow.problem, GradientFlowProblem):
        raise TypeError("compare(flow, nth): the first solution must solve a GradientFlowProblem.")
    if not isinstance(nth.problem, NTHProblem):
        raise TypeError("compare(flow, nth): the second solution must solve an NTHProblem.")
    if flow.ntk is None:
        raise ValueError("compare: solve the flow with save_ntk=True to compare kernels.")
    if flow.t.shape != nth.t.shape or not np.allclose(flow.t, nth.t, rtol=0, atol=1e-12):
        raise ValueError("compare: the two solutions must be saved at the same times (saveat).")
    same_data = all(np.array_equal(getattr(flow.problem.data, a), getattr(nth.problem.data, a))
                    for a in ("X", "y"))
    if not same_data:
        raise ValueError("compare: the flow and the hierarchy must use the same training set "
                         "(the problems' X or y differ).")
    if not same_parameters(flow.problem.network, nth.problem.network):
        raise ValueError("compare: the flow and the hierarchy must start from the same network "
                         "parameters (they differ by value); build both problems from one network.")
    data = {
        "f": variable("f", flow.f, long_name="network output f (exact gradient flow)"),
        "f_nth": variable("f_nth", nth.f),
        "ntk": variable("ntk", flow.ntk, long_name="NTK K2 along the exact flow"),
        "ntk_nth": variable("ntk_nth", nth.ntk),
        "err_f": variable("err_f", np.linalg.norm(np.asarray(flow.f) - np.asarray(nth.f), axis=1)),
        "err_K2": variable("err_K2", np.max(np.abs(np.asarray(flow.ntk) - np.asarray(nth.ntk)),
                                            axis=(1, 2))),
    }
    coords = {"time": coordinate("time", flow.t),
              "order": ((), nth.problem.order, {"long_name": "truncation order p of the Neural "
                                                "Tangent Hierarchy", "units": "1"})}
    width = flow.problem.network.hyperparameters().get("width")
    if width is not None:
        coords["width"] = ((), width, {"long_name": "hidden width m", "units": "1"})
    if flow.f_test is not None and nth.f_test is not None:
        data["err_f_test"] = variable("err_f_test", np.linalg.norm(
            np.asarray(flow.f_test) - np.asarray(nth.f_test), axis=1))
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(provenance(
        f"exact gradient flow vs order-{nth.problem.order} truncated NTH",
        {"flow": flow.problem.config(), "nth": nth.problem.config(),
         "flow_options": flow.options, "nth_options": nth.options},
    ))
    return ds
