"""Statistics on xarray results for error-vs-theory analysis.

- `summary(da, dim="seed")`: mean, standard deviation, standard error and
  quantiles over a named dimension (DifferentialEquations.jl's
  `EnsembleSummary`); NaNs (failed members) are skipped and counted out.
- `fit_power_law(da, dim="width")`: least squares `log y = c + k log x` along
  `dim`, separately for every other coordinate, with a confidence interval for
  the exponent `k`: a Student-t interval from the regression (default), or a
  percentile bootstrap over seeds.
- `compare_exponents(fit, theory, tolerance=...)`: fitted against theoretical
  exponents, with a pass/fail column.

The regression is that of `scipy.stats.linregress`; quantiles are xarray's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._lazy import pd, xr


def _check_dim(obj: xr.DataArray | xr.Dataset, dim: str, argument: str = "dim") -> None:
    if not isinstance(obj, (xr.DataArray, xr.Dataset)):
        raise TypeError(f"expected an xarray DataArray or Dataset, got {type(obj).__name__}.")
    if dim not in obj.dims:
        raise ValueError(f"{argument}={dim!r} is not a dimension of the data; its dimensions "
                         f"are {list(obj.dims)}.")


def _check_confidence(confidence: float) -> float:
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r}: pass a probability in (0, 1), e.g. 0.95.")
    return float(confidence)


def summary(
    da: xr.DataArray,
    dim: str = "seed",
    *,
    quantiles: Sequence[float] = (0.05, 0.5, 0.95),
) -> xr.Dataset:
    """Summary statistics of `da` over `dim` (an ensemble summary).

    Returns a Dataset with `mean`, `std` (sample standard deviation, ddof = 1),
    `sem` (standard error of the mean, `std / sqrt(count)`), `count` (non-NaN
    members) and `quantile` (with a `quantile` dimension), over the remaining
    dimensions. Failed members (NaN) are left out.
    """
    if not isinstance(da, xr.DataArray):
        raise TypeError(f"summary takes a DataArray, e.g. summary(ds.f, dim='seed'), not "
                        f"{type(da).__name__}.")
    _check_dim(da, dim)
    try:
        q = np.asarray(quantiles, dtype=float)
    except (TypeError, ValueError):
        q = np.full(2, np.nan)  # not numbers: the error below
    if q.ndim != 1 or not np.all((q >= 0) & (q <= 1)):
        raise ValueError(f"quantiles={quantiles!r}: pass probabilities in [0, 1].")
    count = da.count(dim)
    std = da.std(dim, ddof=1)
    name = da.name or "value"
    attrs = da.attrs
    out = xr.Dataset({
        "mean": da.mean(dim),
        "std": std,
        "sem": std / np.sqrt(count),
        "count": count,
        "quantiles": da.quantile(q, dim=dim),
    })
    long_name = attrs.get("long_name", name)
    for var, text in (("mean", "mean"), ("std", "standard deviation (ddof=1)"),
                      ("sem", "standard error of the mean"), ("quantiles", "quantiles")):
        out[var].attrs = {"long_name": f"{text} over {dim} of {long_name}",
                          "units": attrs.get("units", "1")}
    out["count"].attrs = {"long_name": f"number of finite values over {dim}", "units": "1"}
    out.attrs["summary_over"] = dim
    return out


def _ols(log_x: np.ndarray, log_y: np.ndarray, confidence: float) -> tuple[float, ...]:
    """Slope, intercept, slope standard error, t-interval, r^2, intercept standard
    error, points used: the formulas of `scipy.stats.linregress` (which
    `tests/test_stats.py` checks this against) without importing `scipy.stats`
    (0.7 s); the t quantile is `scipy.special.stdtrit`, which `scipy.stats.t.ppf` calls."""
    good = np.isfinite(log_x) & np.isfinite(log_y)
    n = int(good.sum())
    if n < 3:
        return (np.nan,) * 7 + (n,)
    import scipy.special  # here, not at import

    x, y = log_x[good], log_y[good]
    ssxm, ssxym, _, ssym = np.cov(x, y, bias=True).flat
    # constant y: r, and with it the interval, are undefined (NaN), as in linregress
    r = np.nan if ssym == 0.0 else float(np.clip(ssxym / np.sqrt(ssxm * ssym), -1.0, 1.0))
    slope = ssxym / ssxm
    intercept = y.mean() - slope * x.mean()
    stderr = np.sqrt((1 - r**2) * ssym / ssxm / (n - 2))
    half = scipy.special.stdtrit(n - 2, 0.5 + confidence / 2) * stderr
    return (slope, intercept, stderr, slope - half, slope + half, r**2,
            stderr * np.sqrt(ssxm + x.mean()**2), n)


def fit_power_law(
    da: xr.DataArray,
    dim: str = "width",
    *,
    interval: str = "t",
    confidence: float = 0.95,
    sample_dim: str = "seed",
    statistic: Callable[[xr.DataArray, str], xr.DataArray] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> xr.Dataset:
    """Fit `y = A x^k`, i.e. `log y = c + k log x`, along `dim`, for every other
    coordinate; `x` is the coordinate of `dim`.

    **Arguments:**

    - `da`: positive values (NaNs are left out of the fit; a fit needs 3 points).
    - `dim`: the dimension along which `x` varies (`"width"`, `"time"`, ...).
    - `interval`: how the confidence interval of `k` is computed:
      - `"t"`: ordinary least squares in log-log with a Student-t interval,
        `k +- t_{n-2} SE(k)`. Exact when the scatter of `log y` about the line
        is independent, normal and of one variance.
      - `"bootstrap"`: `da` still holds the sample dimension `sample_dim`
        (seeds); `y = statistic(da, sample_dim)` is fitted, and `k` is refitted
        on `n_boot` resamples of the seeds (drawn with replacement, the same
        draw at every `x`, which keeps any pairing across `x`); the interval is
        the percentile interval of those `k`.
    - `confidence`: the interval's coverage, 0.95 by default.
    - `statistic`: for `"bootstrap"`, the reduction over `sample_dim`
      (default: the mean), e.g. `lambda a, d: a.std(d, ddof=1)`.
    - `n_boot`, `seed`: bootstrap resamples and their random seed.

    **Returns:** a Dataset over the other coordinates with `exponent` (k),
    `exponent_low`, `exponent_high`, `exponent_stderr`, `intercept` (c),
    `prefactor` (A = e^c), `r2` and `n_points`; attributes say how the interval
    was computed.
    """
    if not isinstance(da, xr.DataArray):
        raise TypeError("fit_power_law takes a DataArray, e.g. fit_power_law(ds.err, "
                        "dim='width').")
    _check_dim(da, dim)
    if da.sizes[dim] < 3:
        raise ValueError(
            f"fit_power_law: {da.sizes[dim]} values of {dim!r}; a fit with an interval needs "
            f"at least 3 (two points give a line through both and no error estimate).")
    confidence = _check_confidence(confidence)
    if interval not in ("t", "bootstrap"):
        raise ValueError(f"interval={interval!r}: use 't' (regression t-interval) or "
                         "'bootstrap' (resampling over sample_dim).")
    if interval == "bootstrap":
        _check_dim(da, sample_dim, "sample_dim")
        if sample_dim == dim:
            raise ValueError(f"sample_dim={sample_dim!r} must differ from dim={dim!r}.")
        if statistic is not None and not callable(statistic):
            raise TypeError(f"statistic={statistic!r}: pass a function (da, dim) -> DataArray, "
                            "e.g. lambda a, d: a.median(d), or None for the mean.")
        statistic = statistic or (lambda a, d: a.mean(d))
        y = statistic(da, sample_dim)
    else:
        if statistic is not None:
            raise ValueError("statistic=... is used with interval='bootstrap' only; reduce "
                             "da yourself for interval='t'.")
        y = da
    try:
        x = np.asarray(da[dim].values, dtype=float)
    except (TypeError, ValueError):
        x = np.full(da.sizes[dim], np.nan)  # labels that are not numbers: the error below
    if np.any(~np.isfinite(x)) or np.any(x <= 0):
        raise ValueError(f"the coordinate {dim!r} has values {da[dim].values.tolist()}: a "
                         "power law needs positive numbers as x; give the dimension a "
                         f"numeric coordinate, e.g. da.assign_coords({dim}=[...]).")
    values = np.asarray(y.values, dtype=float)
    if np.any(values[np.isfinite(values)] <= 0):
        raise ValueError(
            f"fit_power_law needs positive values: {int(np.sum(values <= 0))} are <= 0 "
            "(fit magnitudes, e.g. abs(err) or a standard deviation).")
    log_x = np.log(x)
    log_y = np.log(y)
    names = ("exponent", "intercept", "exponent_stderr", "exponent_low", "exponent_high",
             "r2", "intercept_stderr", "n_points")
    fitted = xr.apply_ufunc(
        lambda ly: _ols(log_x, ly, confidence), log_y, input_core_dims=[[dim]],
        output_core_dims=[[]] * len(names), vectorize=True,
        output_dtypes=[float] * (len(names) - 1) + [int],
    )
    out = xr.Dataset(dict(zip(names, fitted)))
    if interval == "bootstrap":
        low, high = _bootstrap(da, dim, sample_dim, statistic, log_x, confidence, n_boot, seed)
        out["exponent_low"], out["exponent_high"] = low, high
    out["prefactor"] = np.exp(out["intercept"])
    what = da.attrs.get("long_name", da.name or "y")
    method = ("Student-t interval of the least-squares slope in log-log, "
              "t quantile with n_points - 2 degrees of freedom" if interval == "t" else
              f"percentile bootstrap over {sample_dim!r} ({n_boot} resamples, seed {seed}, "
              f"the same draw at every {dim})")
    attrs = {
        "exponent": f"fitted exponent k of {what} ~ A {dim}^k",
        "exponent_low": f"lower end of the {confidence:.0%} confidence interval of k",
        "exponent_high": f"upper end of the {confidence:.0%} confidence interval of k",
        "exponent_stderr": "standard error of k from the regression",
        "intercept": "fitted intercept c of log y = c + k log x",
        "intercept_stderr": "standard error of c from the regression",
        "prefactor": "fitted prefactor A = exp(c)",
        "r2": "coefficient of determination of the log-log fit",
        "n_points": f"number of finite points along {dim} used in the fit",
    }
    for name, text in attrs.items():
        out[name].attrs = {"long_name": text, "units": "1"}
    out.attrs.update({"fit": f"log y = c + k log {dim} (least squares)", "fit_dim": dim,
                      "interval": interval, "interval_method": method,
                      "confidence": confidence})
    return out


def _slopes(log_x: np.ndarray, log_y: xr.DataArray, dim: str) -> xr.DataArray:
    """Least-squares slopes along `dim`, vectorised; NaN points left out."""
    x = xr.DataArray(log_x, dims=[dim]).where(np.isfinite(log_y))
    y = log_y.where(np.isfinite(x))
    dx = x - x.mean(dim)
    dy = y - y.mean(dim)
    slope = (dx * dy).sum(dim) / (dx**2).sum(dim)
    return slope.where(x.count(dim) >= 3)


def _bootstrap(da, dim, sample_dim, statistic, log_x, confidence, n_boot, seed, block=100):
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 100:
        raise ValueError(f"n_boot={n_boot!r}: pass an integer >= 100 (1000 or more for a "
                         "95% interval).")
    rng = np.random.default_rng(seed)
    n = da.sizes[sample_dim]
    slopes = []
    for start in range(0, n_boot, block):
        draws = rng.integers(0, n, (min(block, n_boot - start), n))
        resampled = da.isel({sample_dim: xr.DataArray(draws, dims=("resample", sample_dim))})
        resampled = resampled.drop_vars(sample_dim, errors="ignore")
        slopes.append(_slopes(log_x, np.log(statistic(resampled, sample_dim)), dim))
    slopes = xr.concat(slopes, dim="resample")
    tail = (1 - confidence) / 2
    return (slopes.quantile(tail, dim="resample", skipna=True).drop_vars("quantile"),
            slopes.quantile(1 - tail, dim="resample", skipna=True).drop_vars("quantile"))


def compare_exponents(
    fit: xr.Dataset,
    theory: float | Mapping[Any, float] | xr.DataArray,
    *,
    tolerance: float = 0.1,
    dim: str | None = None,
) -> pd.DataFrame:
    """A table of fitted exponents against theoretical ones.

    **Arguments:**

    - `fit`: the result of `fit_power_law`.
    - `theory`: the theoretical exponent: one number, a DataArray over (some of)
      the fit's coordinates, or a dict `{label: exponent}` over the labels of
      the fit's single dimension (or of `dim`).
    - `tolerance`: a row passes when `|k - k_theory| <= tolerance`.

    **Returns:** a `pandas.DataFrame`, one row per fitted exponent, with columns
    `exponent`, `low`, `high` (the confidence interval), `theory`,
    `difference`, `tolerance`, `pass` and `theory_in_interval`.
    """
    if not isinstance(fit, xr.Dataset) or "exponent" not in fit:
        raise TypeError("fit: pass the Dataset returned by fit_power_law.")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ValueError(f"tolerance={tolerance!r}: pass a number >= 0.")
    if dim is not None and dim not in fit["exponent"].dims:
        raise ValueError(f"dim={dim!r} is not a dimension of the fit; its dimensions are "
                         f"{list(fit['exponent'].dims)}.")
    if isinstance(theory, Mapping):
        dims = [dim] if dim is not None else list(fit["exponent"].dims)
        if len(dims) != 1:
            raise ValueError(f"theory as a dict needs one dimension to label; the fit has "
                             f"{list(fit['exponent'].dims)}: pass dim=... or a DataArray.")
        labels = fit[dims[0]].values.tolist()
        missing = [label for label in labels if label not in theory]
        if missing:
            raise ValueError(f"theory has no exponent for {dims[0]} = {missing}.")
        theory = xr.DataArray([theory[label] for label in labels], dims=dims,
                              coords={dims[0]: fit[dims[0]]})
    elif isinstance(theory, xr.DataArray):
        extra = sorted(set(theory.dims) - set(fit["exponent"].dims))
        if extra:
            raise ValueError(f"theory has dimensions {extra} that the fit lacks (its dimensions "
                             f"are {list(fit['exponent'].dims)}): label theory with the fit's "
                             "dimensions.")
    else:
        try:
            theory = xr.DataArray(float(theory))
        except (TypeError, ValueError):
            raise TypeError(f"theory={theory!r}: pass the theoretical exponent as a number "
                            "(e.g. -0.5), a dict {label: exponent} or a DataArray.") from None
    k, theory = xr.broadcast(fit["exponent"], theory)
    table = xr.Dataset({
        "exponent": k,
        "low": fit["exponent_low"].broadcast_like(k),
        "high": fit["exponent_high"].broadcast_like(k),
        "theory": theory,
    })
    table["difference"] = table["exponent"] - table["theory"]
    table["tolerance"] = xr.full_like(table["exponent"], float(tolerance))
    table["pass"] = np.abs(table["difference"]) <= tolerance
    table["theory_in_interval"] = (table["low"] <= table["theory"]) & (
        table["theory"] <= table["high"])
    frame = table.to_dataframe() if table["exponent"].ndim else pd.DataFrame(
        {name: [table[name].item()] for name in table.data_vars})
    columns = ["exponent", "low", "high", "theory", "difference", "tolerance", "pass",
               "theory_in_interval"]
    return frame[columns]
