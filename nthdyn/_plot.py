"""`nthdyn plot FILE.nc`: a default figure for any nthdyn results file.

The kind of file is read from its variables:

- a comparison (`nd.compare`): `err_f`, `err_K2` (and `err_f_test`) over time, log-log,
  and the outputs of the flow (solid) against those of the hierarchy (dashed);
- a single solve (`nd.to_dataset`): the loss over time (log y when positive), the
  outputs `f` over time with the labels `y`, and the NTK's relative change when the
  file has the NTK;
- an ensemble (`nd.solve(EnsembleProblem(...))`): the loss over time, the median over
  `seed` with a 10%-90% band, one line per value of the next sweep axis (e.g. `width`),
  members whose `retcode` is not 0 left out;
- anything else (a case's own results): the first float variable with one or two
  dimensions, preferring one over time.

Figures are drawn with matplotlib's Agg canvas (no pyplot, no global state) and are
robust to NaN: missing and failed values are left out of lines, medians and bands.

(Over 400 lines on purpose: the four kinds of figure share their panel helpers.)
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ._lazy import xr

#: Sweep axis over which an ensemble's members are summarised (median and band).
SAMPLE_DIM = "seed"
#: The band drawn around the median over seeds.
QUANTILES = (0.1, 0.9)
#: At most this many lines get a legend entry.
MAX_LEGEND = 10
#: Resolution of the PNG files.
DPI = 110


class NothingToPlot(ValueError):
    """The file has no variable that `nthdyn plot` can draw (or not the one asked for)."""


# ---------------------------------------------------------------------------------------
# labels


def _label(da: xr.DataArray | None, fallback: str) -> str:
    """An axis label from `long_name` (and `units` unless dimensionless)."""
    if da is None:
        return fallback
    text = str(da.attrs.get("long_name") or da.name or fallback)
    units = str(da.attrs.get("units", "1"))
    if units not in ("", "1"):
        text += f" [{units}]"
    return _wrap(text)


def _wrap(text: str, width: int = 48) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def _coord_label(ds: xr.Dataset, dim: str) -> str:
    return _label(ds[dim] if dim in ds.coords else None, dim)


def _coord_values(da: xr.DataArray, dim: str) -> np.ndarray:
    values = da[dim].values if dim in da.coords else np.arange(da.sizes[dim])
    return values.astype(float) if values.dtype.kind in "iufb" else np.arange(len(values), dtype=float)


def _value_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


# ---------------------------------------------------------------------------------------
# reductions


def _failed_mask(ds: xr.Dataset, da: xr.DataArray) -> xr.DataArray | None:
    """True where a member failed (`retcode` != 0 or missing), on `retcode`'s dims,
    when they are dims of `da` (None otherwise)."""
    if "retcode" not in ds or da.name in ("retcode", "message"):
        return None
    code = ds["retcode"]
    if code.ndim == 0 or not set(code.dims) <= set(da.dims) or code.dtype.kind not in "iuf":
        return None
    return ~(code == 0)


def _clean(ds: xr.Dataset, da: xr.DataArray) -> tuple[xr.DataArray, int]:
    """`da` as float, with failed members NaN; and how many members failed."""
    out = da.astype(float)
    failed = _failed_mask(ds, da)
    if failed is None:
        return out, 0
    return out.where(~failed), int(failed.sum())


def _x_dim(da: xr.DataArray) -> str:
    """The dimension along the horizontal axis: time, else width, else the longest
    dimension that is not `seed` (the last of equals)."""
    for name in ("time", "width"):
        if name in da.dims:
            return name
    candidates = [d for d in da.dims if d != SAMPLE_DIM] or list(da.dims)
    return max(reversed(candidates), key=lambda d: da.sizes[d])


def _quantiles(da: xr.DataArray, dim: str) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray]:
    with warnings.catch_warnings():  # all-NaN slices (every member failed) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        median = da.median(dim, skipna=True)
        low = da.quantile(QUANTILES[0], dim=dim, skipna=True).drop_vars("quantile")
        high = da.quantile(QUANTILES[1], dim=dim, skipna=True).drop_vars("quantile")
    return median, low, high


def _log_ok(*arrays: np.ndarray) -> bool:
    """Whether a log axis suits these values: none negative, at least two positive."""
    values = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays])
    values = values[np.isfinite(values)]
    return values.size > 0 and bool(np.all(values >= 0)) and int(np.count_nonzero(values > 0)) >= 2


def _positive(values: np.ndarray) -> np.ndarray:
    values = np.array(values, dtype=float)
    values[~(values > 0)] = np.nan
    return values


# ---------------------------------------------------------------------------------------
# panels


def _lines(ax: Any, ds: xr.Dataset, da: xr.DataArray, *, logx: bool = False,
           logy: bool | None = None, label: str | None = None, style: str = "-",
           colors: Any = None) -> str:
    """Lines of `da` against its x dimension: the median over `seed` with a band, one
    line per value of the next dimension, other dimensions at their first value.
    Returns a note for the title (what was fixed, what was left out)."""
    notes = []
    da, failed = _clean(ds, da)
    if failed:
        notes.append(f"{failed} failed or missing member{'s' * (failed > 1)} left out")
    x_dim = _x_dim(da)
    band = SAMPLE_DIM in da.dims and x_dim != SAMPLE_DIM and da.sizes[SAMPLE_DIM] > 1
    if band:
        median, low, high = _quantiles(da, SAMPLE_DIM)
        notes.append(f"median over {da.sizes[SAMPLE_DIM]} seeds, band "
                     f"{QUANTILES[0]:g}-{QUANTILES[1]:g} quantiles")
    else:
        median = da.isel({SAMPLE_DIM: 0}) if SAMPLE_DIM in da.dims and x_dim != SAMPLE_DIM else da
        low = high = None
    others = [d for d in median.dims if d != x_dim]
    group = others[0] if others else None
    for extra in others[1:]:
        value = median[extra].values[0] if extra in median.coords else 0
        notes.append(f"{extra} = {_value_text(value)}")
        median = median.isel({extra: 0})
        if band:
            low, high = low.isel({extra: 0}), high.isel({extra: 0})
    x = _coord_values(median, x_dim)
    if logy is None:
        logy = _log_ok(median.values) and (low is None or _log_ok(low.values, high.values))
    if logx and not _log_ok(x):
        logx = False
    xs = _positive(x) if logx else x
    hidden = False
    n_lines = median.sizes[group] if group else 1
    if colors is None:
        colors = _colors(n_lines)
    legend = group is not None and n_lines <= MAX_LEGEND
    for i in range(n_lines):
        select = {group: i} if group else {}
        y = median.isel(select).transpose(x_dim).values
        ys = _positive(y) if logy else y
        hidden |= bool(np.any(np.isfinite(y) & (np.isnan(ys) | np.isnan(xs))))
        name = None
        if group is not None and legend:
            value = median[group].values[i] if group in median.coords else i
            name = f"{group} = {_value_text(value)}"
        if label is not None:
            name = label if name is None else f"{label}, {name}"
        ax.plot(xs, ys, style, color=colors[i % len(colors)], label=name,
                lw=1.6 if n_lines <= MAX_LEGEND else 0.8, marker="o" if x.size <= 12 else None,
                ms=3)
        if band:
            lo = low.isel(select).transpose(x_dim).values
            hi = high.isel(select).transpose(x_dim).values
            if logy:
                lo, hi = _positive(lo), _positive(hi)
            ax.fill_between(xs, lo, hi, color=colors[i % len(colors)], alpha=0.2, lw=0)
    if group is not None and not legend:
        notes.append(f"one line per {group} ({n_lines})")
    if hidden:
        notes.append("points at 0 not shown (log axes)")
    if logy:
        _log_axis(ax.yaxis, ax.set_yscale)
    if logx:
        _log_axis(ax.xaxis, ax.set_xscale)
    if not np.any(np.isfinite(median.values)):
        finite = xs[np.isfinite(xs)]
        if finite.size and finite.min() < finite.max():
            ax.set_xlim(finite.min(), finite.max())
        ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center",
                va="center", color="0.4")
    ax.set_xlabel(_coord_label(ds, x_dim))
    ax.set_ylabel(_label(da, str(da.name)))
    ax.grid(alpha=0.3, which="both" if (logx or logy) else "major")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return "; ".join(notes)


def _log_axis(axis: Any, set_scale: Any) -> None:
    """A log scale with plain tick labels (0.9, 4, 1e-05), not 9x10^-1."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):  # matplotlib's choice of ticks to label, written as %g
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    set_scale("log")
    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False))


def _colors(n: int) -> list:
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(10)]
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def _outputs(ax: Any, ds: xr.Dataset, f: xr.DataArray, *, dashed: xr.DataArray | None = None) -> None:
    """The outputs over time, one line per training sample (dotted: the labels y)."""
    f = f.astype(float)
    t = _coord_values(f, "time")
    others = [d for d in f.dims if d != "time"]
    f = f.transpose("time", *others).values.reshape(len(t), -1)
    colors = _colors(f.shape[1])
    width = 1.4 if f.shape[1] <= MAX_LEGEND else 0.7
    for a in range(f.shape[1]):
        ax.plot(t, f[:, a], color=colors[a % len(colors)], lw=width)
    if dashed is not None:
        g = dashed.astype(float).transpose("time", *others).values.reshape(len(t), -1)
        for a in range(g.shape[1]):
            ax.plot(t, g[:, a], "--", color="k", lw=0.8, alpha=0.7)
    y = ds.get("y")
    if y is not None and y.dims == tuple(others) and y.size == f.shape[1]:
        for a, value in enumerate(np.ravel(y.values)):
            ax.axhline(float(value), color=colors[a % len(colors)], ls=":", lw=0.8)
    ax.set_xlabel(_coord_label(ds, "time"))
    ax.set_ylabel(_label(ds.get("f"), "f"))
    ax.grid(alpha=0.3)


def _ntk_change(ax: Any, ds: xr.Dataset) -> None:
    ntk = ds["ntk"].astype(float).transpose("time", ...).values
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        size = ntk.reshape(ntk.shape[0], -1)
        change = np.linalg.norm(size - size[0], axis=1) / np.linalg.norm(size[0])
    ax.plot(_coord_values(ds["ntk"], "time"), change, color="C3")
    ax.set_xlabel(_coord_label(ds, "time"))
    ax.set_ylabel("||K2(t) - K2(0)||_F / ||K2(0)||_F")
    ax.grid(alpha=0.3)


# ---------------------------------------------------------------------------------------
# kinds of file


def kind(ds: xr.Dataset) -> str:
    """`"comparison"`, `"solve"`, `"ensemble"` or `"other"`."""
    if any(name in ds and "time" in ds[name].dims for name in ("err_f", "err_K2")):
        return "comparison"
    if "loss" in ds and "time" in ds["loss"].dims:
        return "solve" if ds["loss"].dims == ("time",) else "ensemble"
    return "other"


def _plottable(da: xr.DataArray) -> bool:
    """Real numbers along at least one dimension longer than 1."""
    return da.dtype.kind in "fiu" and any(da.sizes[d] > 1 for d in da.dims)


def default_variable(ds: xr.Dataset) -> str | None:
    """The variable a file of another kind is drawn by: the first float variable with
    one or two dimensions, one over time if there is one."""
    floats = [name for name, da in ds.data_vars.items()
              if da.dtype.kind == "f" and da.ndim in (1, 2) and _plottable(da)]
    over_time = [name for name in floats if "time" in ds[name].dims]
    return (over_time or floats or [None])[0]


def _figure(n_panels: int):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * n_panels if n_panels > 1 else 6.8, 4.4), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def _title(fig: Any, ds: xr.Dataset, path: Path) -> None:
    title = ds.attrs.get("title")
    fig.suptitle(_wrap(f"{title}  ({path.name})" if title else path.name, 110), fontsize=11)


def _draw_comparison(ds: xr.Dataset, path: Path):
    errors = [name for name in ("err_f", "err_K2", "err_f_test") if name in ds]
    one_d = all(ds[name].dims == ("time",) for name in errors)
    panels = (1 if one_d else len(errors)) + ("f" in ds and "f_nth" in ds)
    fig, axes = _figure(panels)
    if one_d:
        notes = [_lines(axes[0], ds, ds[name], logx=True, label=name, colors=[f"C{i}"])
                 for i, name in enumerate(errors)]
        axes[0].set_ylabel("error (see legend)")
        text = [f"{n}: {ds[n].attrs.get('long_name', n)}" for n in errors]
        text += [note for note in dict.fromkeys(notes) if note]
        axes[0].set_title(_wrap("; ".join(text), 60), fontsize=9)
    else:
        for ax, name in zip(axes, errors):
            note = _lines(ax, ds, ds[name], logx=True)
            ax.set_title(_wrap(note, 60), fontsize=9)
    if "f" in ds and "f_nth" in ds:
        ax = axes[-1]
        f, g = ds["f"], ds["f_nth"]
        extra = [d for d in f.dims if d not in ("time", "sample")]
        if extra:  # stacked comparisons: the first of each
            f, g = f.isel({d: 0 for d in extra}), g.isel({d: 0 for d in extra if d in g.dims})
        _outputs(ax, ds, f, dashed=g)
        order = ds.coords.get("order")
        nth = "truncated NTH" + (f" (p = {int(order.values.ravel()[0])})" if order is not None else "")
        ax.set_title(f"f: exact flow (solid), {nth} (dashed)", fontsize=9)
    return fig


def _draw_solve(ds: xr.Dataset, path: Path):
    panels = ["loss"] + (["f"] if "f" in ds and "time" in ds["f"].dims else [])
    if "ntk" in ds and ds["ntk"].dims[:1] == ("time",):
        panels.append("ntk")
    fig, axes = _figure(len(panels))
    for ax, panel in zip(axes, panels):
        if panel == "loss":
            note = _lines(ax, ds, ds["loss"], colors=["C0"])
            ax.set_title(_wrap(note or "training loss", 60), fontsize=9)
        elif panel == "f":
            _outputs(ax, ds, ds["f"])
            ax.set_title("outputs f(x_a) over time, one line per sample (dotted: labels y)",
                         fontsize=9)
        else:
            _ntk_change(ax, ds)
            ax.set_title("NTK relative change", fontsize=9)
    status = _status_note(ds)
    if status:
        axes[0].set_title(f"{axes[0].get_title()}\n{status}", fontsize=9, color="C3")
    return fig


def _status_note(ds: xr.Dataset) -> str:
    if "retcode" not in ds or ds["retcode"].ndim != 0:
        return ""
    from ._solve import RETCODES

    code = ds["retcode"].values
    if code.dtype.kind in "iuf" and np.isfinite(code) and int(code) != 0:
        return f"status: {RETCODES.get(int(code), 'unknown status')}"
    return ""


def _draw_ensemble(ds: xr.Dataset, path: Path):
    fig, axes = _figure(1)
    note = _lines(axes[0], ds, ds["loss"])
    axes[0].set_title(_wrap(note, 70), fontsize=9)
    return fig


def _draw_variable(ds: xr.Dataset, name: str, path: Path):
    da = ds[name]
    fig, axes = _figure(1)
    logy = None if da.dtype.kind == "f" else False
    note = _lines(axes[0], ds, da, logx=_x_dim(da) == "width", logy=logy)
    axes[0].set_title(_wrap(f"{name}" + (f"; {note}" if note else ""), 70), fontsize=9)
    return fig


def figure(ds: xr.Dataset, path: str | os.PathLike = "results.nc", variable: str | None = None):
    """The default figure of a results Dataset (a `matplotlib.figure.Figure`).
    Raises `NothingToPlot` when there is nothing to draw."""
    path = Path(path)
    if variable is not None:
        if variable not in ds.variables:
            raise NothingToPlot(f"{path} has no variable {variable!r}; it has: "
                                f"{', '.join(map(str, ds.data_vars))}")
        if not _plottable(ds[variable]):
            raise NothingToPlot(f"{path}: variable {variable!r} {tuple(ds[variable].dims)} "
                                f"({ds[variable].dtype}) has no numeric values along a dimension "
                                "to draw")
        fig = _draw_variable(ds, variable, path)
    else:
        what = kind(ds)
        if what == "comparison":
            fig = _draw_comparison(ds, path)
        elif what == "solve":
            fig = _draw_solve(ds, path)
        elif what == "ensemble":
            fig = _draw_ensemble(ds, path)
        else:
            name = default_variable(ds)
            if name is None:
                raise NothingToPlot(f"nothing nthdyn can plot by default in {path}; "
                                    "pass --variable NAME")
            fig = _draw_variable(ds, name, path)
    _title(fig, ds, path)
    return fig


def png_path(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Where the figure of results file `path` goes: `out`, or next to the file as
    `STEM.plot.png` (a case's own figure, `STEM.png`, is never overwritten)."""
    return Path(path).with_suffix(".plot.png") if out is None else Path(out)


def plot_file(path: str | os.PathLike, out: str | os.PathLike | None = None,
              variable: str | None = None, *, dpi: int = DPI) -> Path:
    """Draw the default figure of results file `path` (or of its `variable`) into
    a PNG (see `png_path`). Returns the PNG's path."""
    from ._io import read_netcdf

    fig = figure(read_netcdf(path), path, variable)
    out = png_path(path, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
