"""Jacot et al. Section 6.2: trained finite networks follow the infinite-width Gaussian distribution of functions.

Networks in Jacot's parametrization (JacotMLP, relu, beta = 0.1, L = 4 weight layers:
depth = 3 hidden layers) of widths n = 50 and n = 1000, 10 initializations each, are
trained by 1000 steps of gradient descent with learning rate 1.0 on 4 points of the
unit circle (angles 45, 135, 225, 315 degrees, labels f*(x) = x1 x2 = +-1/2). Their
functions on the unit circle are drawn against the 10th, 50th and 90th percentiles of
the t -> infinity limiting Gaussian process (Jacot Section 5): the kernel interpolant
Theta(x, X) Theta^-1 y plus a centred Gaussian with the NNGP covariance Sigma^(4)
conditioned to vanish on the training points. Jacot estimated Theta_inf^(4) and
Sigma^(4) from a width-10000 network; here they are exact (arc-cosine closed forms).

The coverage, the fraction of network values (initializations x circle points away
from the training points) between the 10th and 90th percentiles, is 0.8 for functions
drawn from the limit. All in float64.

Writes jacot_function_distribution.nc and jacot_function_distribution.png.
"""

from pathlib import Path

import jax
import numpy as np
import xarray as xr

import nthdyn as nd

DEPTH, BETA, LEARNING_RATE = 3, 0.1, 1.0
PERCENTILES = (10, 50, 90)


def _settings(quick):
    if quick:
        return dict(widths=(16, 48), inits=2, steps=20, n_circle=36)
    return dict(widths=(50, 1000), inits=10, steps=1000, n_circle=180)


def run(out: Path, quick: bool):
    s = _settings(quick)
    widths, inits, steps = s["widths"], s["inits"], s["steps"]
    train_angles = np.radians([45.0, 135.0, 225.0, 315.0])
    X = np.stack([np.cos(train_angles), np.sin(train_angles)], axis=1)
    data = nd.TrainingSet(X, nd.product_teacher(X))
    angles = 2 * np.pi * np.arange(s["n_circle"]) / s["n_circle"]
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=1)

    spec = nd.JacotMLP(2, 1, DEPTH, "relu", beta=BETA, key=0)
    limit = nd.limiting_distribution(spec, data, circle)  # t -> infinity
    limit_t = nd.limiting_distribution(spec, data, circle, t=float(steps))
    bands = np.stack([limit.percentile(q) for q in PERCENTILES])

    functions = np.zeros((len(widths), inits, 2, len(angles)))
    losses = np.zeros((len(widths), inits, 2))
    for i, width in enumerate(widths):
        for j in range(inits):
            net = nd.JacotMLP(2, width, DEPTH, "relu", beta=BETA,
                              key=jax.random.fold_in(jax.random.key(0), j))
            problem = nd.GradientDescentProblem(net, data, steps, LEARNING_RATE, test=circle)
            sol = nd.solve(problem, saveat=[0, steps])
            functions[i, j] = np.asarray(sol.f_test)
            losses[i, j] = np.asarray(sol.loss)

    ds = _dataset(functions, losses, limit, limit_t, bands, widths, inits, steps, angles,
                  train_angles, data, s)
    nc = nd.write_netcdf(ds, out / "jacot_function_distribution.nc")
    png = _plot(ds, out / "jacot_function_distribution.png")
    gap = float(np.max(np.abs(limit_t.mean - limit.mean)))
    print(f"  limiting GP at t = {steps} vs t = inf: mean differs by at most {gap:.2g}")
    for width in widths:
        w = ds.sel(width=width)
        print(f"  width {width:>5}: coverage of the 10-90% band {float(w.coverage):.3f} (limit: 0.8); "
              f"mean function vs GP median RMS {float(w.mean_error):.3g}; "
              f"std over inits / GP std {float(w.std_ratio):.3g}; "
              f"final loss {float(w.loss.sel(time=steps).mean()):.2g}")
    print(f"  wrote {nc} and {png}")
    return ds


def _dataset(functions, losses, limit, limit_t, bands, widths, inits, steps, angles,
             train_angles, data, s):
    final = functions[:, :, 1]  # (width, init, angle) at t = steps
    distance = np.abs(np.angle(np.exp(1j * (angles[:, None] - train_angles[None, :]))))
    away = distance.min(axis=1) > np.radians(5.0)  # where the band has width
    inside = (final >= bands[0]) & (final <= bands[-1])
    coverage = inside[:, :, away].mean(axis=(1, 2))
    sd = np.sqrt(np.maximum(np.diag(limit.covariance), 0.0))
    rms_sd = np.sqrt(np.mean(sd[away] ** 2))
    mean_error = np.sqrt(np.mean((final.mean(axis=1) - limit.mean) ** 2, axis=-1))
    std_ratio = np.sqrt(np.mean(final.std(axis=1, ddof=1)[:, away] ** 2, axis=-1)) / rms_sd
    ds = xr.Dataset(
        {
            "f": (("width", "init", "time", "angle"), functions, {
                "long_name": "network function f(x) on the unit circle", "units": "1"}),
            "gp_percentile": (("percentile", "angle"), bands, {
                "long_name": "percentiles of the t -> infinity limiting Gaussian process "
                             "(Jacot et al. Sec. 5)", "units": "1"}),
            "gp_mean": (("angle",), limit.mean, {"long_name": "mean of the limiting GP, t -> infinity",
                                                 "units": "1"}),
            "gp_std": (("angle",), sd, {"long_name": "standard deviation of the limiting GP, "
                                                     "t -> infinity", "units": "1"}),
            "gp_mean_at_steps": (("angle",), limit_t.mean, {
                "long_name": f"mean of the limiting GP at t = {steps}", "units": "1"}),
            "loss": (("width", "init", "time"), losses, {
                "long_name": "training loss 1/(2n) sum (f - f*)^2", "units": "1"}),
            "coverage": (("width",), coverage, {
                "long_name": "fraction of network values between the 10th and 90th GP percentiles "
                             "(circle points more than 5 degrees from a training point)",
                "units": "1"}),
            "mean_error": (("width",), mean_error, {
                "long_name": "RMS over the circle of (mean over initializations of f - GP mean)",
                "units": "1"}),
            "std_ratio": (("width",), std_ratio, {
                "long_name": "RMS std over initializations of f / RMS GP std (away from training "
                             "points)", "units": "1"}),
            "X_train": (("sample", "input_dim"), np.asarray(data.X), {
                "long_name": "training inputs on the unit circle", "units": "1"}),
            "y_train": (("sample",), np.asarray(data.y), {"long_name": "labels f*(x) = x1 x2",
                                                          "units": "1"}),
            "train_angle": (("sample",), train_angles, {"long_name": "angle of the training inputs",
                                                        "units": "radian"}),
        },
        coords={
            "width": ("width", np.asarray(widths), {"long_name": "hidden width n", "units": "1"}),
            "init": ("init", np.arange(inits), {
                "long_name": "initialization index j (key fold_in(key(0), j))", "units": "1"}),
            "time": ("time", np.asarray([0, steps]), {
                "long_name": "gradient-descent step (learning rate 1.0)", "units": "1"}),
            "angle": ("angle", angles, {"long_name": "angle g of x = (cos g, sin g)",
                                        "units": "radian"}),
            "percentile": ("percentile", np.asarray(PERCENTILES), {"long_name": "percentile",
                                                                    "units": "percent"}),
        },
    )
    ds.attrs.update(nd.provenance(
        "Jacot et al. Sec. 6.2: trained networks vs the limiting Gaussian process",
        {"network": "JacotMLP", "depth": DEPTH, "L_jacot": DEPTH + 1, "activation": "relu",
         "beta": BETA, "learning_rate": LEARNING_RATE, **s}))
    return ds


def _plot(ds, path):
    import matplotlib.pyplot as plt

    steps = int(ds.time[-1])
    degrees = np.append(np.degrees(ds.angle.values), 360.0)  # close the circle

    def closed(values):
        values = np.asarray(values)
        return np.append(values, values[..., :1], axis=-1)
    fig, axes = plt.subplots(1, ds.sizes["width"], figsize=(11, 4.6), sharey=True,
                             layout="constrained")
    for axis, width in zip(np.atleast_1d(axes), ds.width.values):
        w = ds.sel(width=width)
        axis.fill_between(degrees, closed(ds.gp_percentile.sel(percentile=10)),
                          closed(ds.gp_percentile.sel(percentile=90)), color="0.85",
                          label="limit: 10th-90th percentile")
        for j in range(ds.sizes["init"]):
            axis.plot(degrees, closed(w.f.sel(time=steps).isel(init=j)), color="tab:blue", lw=0.8,
                      alpha=0.7, label=f"network at t = {steps}" if j == 0 else None)
        for q, style in zip((10, 50, 90), (":", "-", ":")):
            axis.plot(degrees, closed(ds.gp_percentile.sel(percentile=q)), color="black", ls=style, lw=1.3,
                      label="limit: median" if q == 50 else ("limit: 10th, 90th" if q == 10 else None))
        axis.plot(np.degrees(ds.train_angle), ds.y_train, "o", color="tab:red", ms=6,
                  label="training points")
        axis.set(title=f"width n = {width}: {ds.sizes['init']} initializations\n"
                       f"coverage of the 10-90% band {float(w.coverage):.2f} (limit 0.80)",
                 xlabel=r"angle $\gamma$ of $x = (\cos\gamma, \sin\gamma)$ (degrees)")
        axis.set_xticks(np.arange(0, 361, 90))
        axis.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel(r"network function $f_\theta(x)$")
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=5, fontsize=9)
    fig.suptitle(f"Jacot et al. Fig. 2: relu, L = 4, beta = 0.1, {steps} gradient-descent steps "
                 "(rate 1.0) vs the t -> infinity limiting Gaussian process")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    nd.run_case(run, __doc__)
