"""Solutions: saved observables over time, callable in time, with a status."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

from ._results import RESULTS, code, name


class Solution(eqx.Module):
    """The result of `solve`.

    **Attributes:**

    - `problem`: the problem solved.
    - `t`: save times `(time,)` (steps for gradient descent).
    - `f`: outputs on the training set `(time, n)`.
    - `dfdt`: their time derivative `(time, n)` (`None` for gradient descent).
    - `loss`: `L = 1/(2n) ||f - y||^2` `(time,)`.
    - `ntk`: the NTK on the training set `(time, n, n)`, if asked for.
    - `f_test`, `dfdt_test`: outputs on the test points `(time, t)`, if any.
    - `network`: the network at the end of the span (`None` for the hierarchy and
      kernel regression, which evolve outputs and kernels, not parameters).
    - `result`: the status, a `RESULTS` item (`RESULTS.successful` on success;
      batched under `vmap`). `status` is its name, `retcode` its integer code.
    - `stats`: steps taken, accepted, rejected (arrays).
    - `solver`, `options`: what produced it (for provenance).
    - `observables`: a problem's further saved observables `{name: (time, ...)}`
      (e.g. the gradient flow's `save_regime`: `movement`, `ntk_change`, `u`,
      `theta`), described in the variable registry.

    Under `eqx.filter_vmap` every array (and `problem`, `network`) gains the batch
    axes in front.

    Calling `solution(t)` interpolates `f` at any time in the span: piecewise
    cubic Hermite on the saved `(f, df/dt)`, fourth-order in the save spacing.
    For exact values, put the time in `saveat`.
    """

    problem: Any
    t: Float[Array, " time"]
    f: Float[Array, "time n"]
    dfdt: Float[Array, "time n"] | None
    loss: Float[Array, " time"]
    ntk: Float[Array, "time n n"] | None
    f_test: Float[Array, "time t"] | None
    dfdt_test: Float[Array, "time t"] | None
    network: Any
    result: RESULTS
    stats: dict[str, Any]
    solver: str = eqx.field(static=True)
    options: dict[str, Any] = eqx.field(static=True)
    observables: dict[str, Any] = eqx.field(default_factory=dict)

    @property
    def status(self) -> str:
        """The name of the status, e.g. `"successful"` (unbatched solutions)."""
        return name(self.result)

    @property
    def retcode(self) -> Any:
        """The integer code of the status, as stored in NetCDF files (an array of
        codes for a batched solution)."""
        codes = code(self.result)
        return int(codes) if codes.ndim == 0 else codes

    @property
    def y(self) -> Float[Array, " n"]:
        return self.problem.data.y

    def __call__(self, t: float | Any) -> np.ndarray:
        """`f` on the training set at time(s) `t`: shape `(n,)` or `(len(t), n)`."""
        return self.evaluate(t, "f")

    def evaluate(self, t: float | Any, variable: str = "f") -> np.ndarray:
        """Interpolate `variable` (`"f"` or `"f_test"`) at time(s) `t`."""
        if variable not in ("f", "f_test"):
            raise ValueError(f"variable={variable!r}: use 'f' or 'f_test'.")
        values = getattr(self, variable)
        if values is None:
            raise ValueError(f"this solution has no {variable!r} (pass test= to the problem).")
        derivative = getattr(self, "d" + variable.replace("f", "fdt", 1))
        ts = np.asarray(self.t, dtype=float)
        values = np.asarray(values)
        try:
            query = np.asarray(t, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(f"t={t!r}: pass a time or an array of times in the saved span "
                            f"[{ts[0]}, {ts[-1]}].") from None
        if not np.all(np.isfinite(query)):
            raise ValueError(f"t={t!r}: pass finite times in the saved span [{ts[0]}, {ts[-1]}].")
        if np.any(query < ts[0]) or np.any(query > ts[-1]):
            raise ValueError(
                f"t={t!r} is outside the saved span [{ts[0]}, {ts[-1]}]: solve over a "
                "longer span or save the end points."
            )
        if derivative is None:  # discrete steps: only saved steps exist
            index = np.searchsorted(ts, query)
            index = np.clip(index, 0, len(ts) - 1)
            if not np.all(ts[index] == query):
                raise ValueError(
                    f"t={t!r}: gradient descent has values only at the saved steps; "
                    "add this step to saveat."
                )
            return values[index]
        return _hermite(ts, values, np.asarray(derivative), query)


def _hermite(ts, values, slopes, query):
    """Piecewise cubic Hermite interpolation at `query` (scalar or 1-d)."""
    i = np.clip(np.searchsorted(ts, query, side="right") - 1, 0, len(ts) - 2)
    h = ts[i + 1] - ts[i]
    s = ((query - ts[i]) / h)[..., None]
    h = h[..., None] if np.ndim(h) else h
    h00 = (1 + 2 * s) * (1 - s) ** 2
    h10 = s * (1 - s) ** 2
    h01 = s**2 * (3 - 2 * s)
    h11 = s**2 * (s - 1)
    return (
        h00 * values[i]
        + h10 * h * slopes[i]
        + h01 * values[i + 1]
        + h11 * h * slopes[i + 1]
    )
