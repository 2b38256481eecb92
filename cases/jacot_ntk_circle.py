"""Jacot et al. Section 6.1: the NTK of a depth-4 relu network converges to a fixed limit as the width grows.

Networks in Jacot's parametrization (JacotMLP: preactivations W a / sqrt(n_l) + beta b,
beta = 0.1, relu, L = 4 weight layers: depth = 3 hidden layers) of widths n = 500 and
n = 10000, 10 independent initializations each. The kernel Theta(x0, x) for x0 = (1, 0)
and x = (cos g, sin g) on the unit circle is computed at t = 0 and after 200 steps of
gradient descent with learning rate 1.0 on the regression of f*(x) = x1 x2 on 4 random
N(0, I_2) inputs; the limiting NTK Theta_inf^(4) (Jacot Thm. 1, closed-form arc-cosine
expectations) is drawn beside them. The wider network's kernels spread less around the
limit and move less during training.

How it fits on a small CPU: the width-10000 network has 2 x 10^8 weights. It is stored
in float32 (the kernels' spread and movement are ~1e-2 to 1e-3, far above float32
rounding; width 500 stays in float64); gradient descent keeps the updates of the two
10^4 x 10^4 matrices as low-rank factors (nthdyn.low_rank_descent: each step reads the
matrices twice, forward and backward, and never writes them); Theta(x0, .) is the
structured NTK on 48 circle points (every 7.5 degrees); 4 training points (Jacot does
not give their number). A step then moves ~1.6 GB through memory, which sets the run
time (measured times: docs/jacot_cases.md).

Writes jacot_ntk_circle.nc and jacot_ntk_circle.png.
"""

import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

import nthdyn as nd

DEPTH, BETA, LEARNING_RATE = 3, 0.1, 1.0
FLOAT32_FROM_WIDTH = 5000


def _settings(quick):
    if quick:
        return dict(widths=(16, 48), inits=2, steps=3, n_circle=12, n_train=8)
    return dict(widths=(500, 10000), inits=10, steps=200, n_circle=48, n_train=4)


def _member(width, key, dtype):
    if dtype == jnp.float32:
        with jax.enable_x64(False):  # draw the 10^8 weights directly in float32
            return nd.JacotMLP(2, width, DEPTH, "relu", beta=BETA, key=key)
    return nd.JacotMLP(2, width, DEPTH, "relu", beta=BETA, key=key)


def _cast(data, dtype):
    return eqx.tree_at(lambda d: (d.X, d.y), data, (data.X.astype(dtype), data.y.astype(dtype)))


_kernel = eqx.filter_jit(nd.ntk_structured)


def run(out: Path, quick: bool):
    s = _settings(quick)
    widths, inits, steps = s["widths"], s["inits"], s["steps"]
    rng = np.random.default_rng(2018)
    X = rng.standard_normal((s["n_train"], 2))  # Jacot: random N(0, 1) inputs
    data = nd.TrainingSet(X, nd.product_teacher(X))
    angles = 2 * np.pi * np.arange(s["n_circle"]) / s["n_circle"]
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    x0 = circle[:1]  # (1, 0)

    spec = nd.JacotMLP(2, 1, DEPTH, "relu", beta=BETA, key=0)
    limit = nd.limiting_kernels(spec, x0, circle).ntk[0]

    kernels = np.zeros((len(widths), inits, 2, len(angles)))
    losses = np.zeros((len(widths), inits, 2))
    seconds = np.zeros(len(widths))
    bits = []
    for i, width in enumerate(widths):
        dtype = jnp.float32 if width >= FLOAT32_FROM_WIDTH else jnp.float64
        bits.append(32 if dtype == jnp.float32 else 64)
        cast = _cast(data, dtype)
        x0_, circle_ = jnp.asarray(x0, dtype), jnp.asarray(circle, dtype)
        start = time.perf_counter()
        for j in range(inits):
            net = _member(width, jax.random.fold_in(jax.random.key(0), j), dtype)
            kernels[i, j, 0] = np.asarray(_kernel(net, x0_, circle_))[0]
            problem = nd.GradientDescentProblem(net, cast, steps, LEARNING_RATE)
            sol = nd.low_rank_descent(problem, saveat=[0, steps], dense_network=False)
            kernels[i, j, 1] = np.asarray(_kernel(sol.network, x0_, circle_))[0]
            losses[i, j] = np.asarray(sol.loss)
            del net, sol, problem
            if not quick:
                print(f"  width {width}: initialization {j + 1}/{inits} done "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
        seconds[i] = time.perf_counter() - start

    ds = _dataset(kernels, losses, limit, widths, inits, steps, angles, data, bits, seconds, s)
    nc = nd.write_netcdf(ds, out / "jacot_ntk_circle.nc")
    png = _plot(ds, out / "jacot_ntk_circle.png")
    for width in widths:
        w = ds.sel(width=width)
        print(f"  width {width:>5} ({int(w.float_bits)}-bit, {float(w.seconds):.0f} s): spread of Theta(x0, .) "
              f"over inits {float(w.spread.sel(time=0)):.3g} at t = 0, {float(w.spread.sel(time=steps)):.3g} "
              f"at t = {steps}; mean at t = 0 vs limit {float(w.mean_deviation):.3g}; "
              f"movement ||Theta_{steps} - Theta_0|| / ||Theta_0|| = {float(w.movement):.3g}; "
              f"loss {float(w.loss.sel(time=0).mean()):.3g} -> {float(w.loss.sel(time=steps).mean()):.3g}")
    print(f"  wrote {nc} and {png}")
    return ds


def _dataset(kernels, losses, limit, widths, inits, steps, angles, data, bits, seconds, s):
    norm = np.linalg.norm(limit) / np.sqrt(len(limit))  # RMS of the limit over the circle
    spread = np.sqrt(np.mean(np.var(kernels, axis=1, ddof=1), axis=-1)) / norm
    movement = np.mean(np.linalg.norm(kernels[:, :, 1] - kernels[:, :, 0], axis=-1)
                       / np.linalg.norm(kernels[:, :, 0], axis=-1), axis=1)
    deviation = np.linalg.norm(kernels[:, :, 0].mean(axis=1) - limit, axis=-1) / np.linalg.norm(limit)
    ds = xr.Dataset(
        {
            "ntk": (("width", "init", "time", "angle"), kernels, {
                "long_name": "NTK Theta(x0, x) of the finite network, x0 = (1, 0), x = (cos g, sin g)",
                "units": "1"}),
            "ntk_limit": (("angle",), limit, {
                "long_name": "limiting NTK Theta_inf^(4)(x0, x) (Jacot et al. Thm. 1)", "units": "1"}),
            "loss": (("width", "init", "time"), losses, {
                "long_name": "training loss 1/(2n) sum (f - f*)^2", "units": "1"}),
            "spread": (("width", "time"), spread, {
                "long_name": "RMS over the circle of the std over initializations of Theta(x0, x), "
                             "relative to the RMS of the limit", "units": "1"}),
            "movement": (("width",), movement, {
                "long_name": f"mean over initializations of ||Theta_{steps}(x0, .) - Theta_0(x0, .)|| / "
                             "||Theta_0(x0, .)|| on the circle", "units": "1"}),
            "mean_deviation": (("width",), deviation, {
                "long_name": "||mean over initializations of Theta_0(x0, .) - Theta_inf(x0, .)|| / "
                             "||Theta_inf(x0, .)||", "units": "1"}),
            "float_bits": (("width",), np.asarray(bits, np.int32), {
                "long_name": "floating-point precision of the network's weights (bits)", "units": "1"}),
            "seconds": (("width",), seconds, {"long_name": "wall time of all initializations",
                                              "units": "s"}),
            "X_train": (("sample", "input_dim"), np.asarray(data.X), {
                "long_name": "training inputs, N(0, I_2)", "units": "1"}),
            "y_train": (("sample",), np.asarray(data.y), {
                "long_name": "training labels f*(x) = x1 x2", "units": "1"}),
        },
        coords={
            "width": ("width", np.asarray(widths), {"long_name": "hidden width n", "units": "1"}),
            "init": ("init", np.arange(inits), {
                "long_name": "initialization index j (key fold_in(key(0), j))", "units": "1"}),
            "time": ("time", np.asarray([0, steps]), {
                "long_name": "gradient-descent step (learning rate 1.0)", "units": "1"}),
            "angle": ("angle", angles, {"long_name": "angle g of x on the unit circle",
                                        "units": "radian"}),
        },
    )
    ds.attrs.update(nd.provenance(
        "Jacot et al. Sec. 6.1: NTK of a depth-4 relu network at two widths, t = 0 and t = 200",
        {"network": "JacotMLP", "depth": DEPTH, "L_jacot": DEPTH + 1, "activation": "relu",
         "beta": BETA, "learning_rate": LEARNING_RATE, "solver": "nthdyn.low_rank_descent",
         "float32_from_width": FLOAT32_FROM_WIDTH, **s}))
    return ds


def _plot(ds, path):
    import matplotlib.pyplot as plt

    steps = int(ds.time[-1])
    degrees = np.append(np.degrees(ds.angle.values), 360.0)  # close the circle

    def closed(values):
        values = np.asarray(values)
        return np.append(values, values[..., :1], axis=-1)
    fig, axes = plt.subplots(1, ds.sizes["width"], figsize=(11, 4.2), sharey=True,
                             constrained_layout=True)
    for axis, width in zip(np.atleast_1d(axes), ds.width.values):
        w = ds.sel(width=width)
        for j in range(ds.sizes["init"]):
            axis.plot(degrees, closed(w.ntk.sel(time=0).isel(init=j)), color="tab:blue", lw=0.8, alpha=0.6,
                      label="t = 0" if j == 0 else None)
            axis.plot(degrees, closed(w.ntk.sel(time=steps).isel(init=j)), color="tab:orange", lw=0.8,
                      alpha=0.6, label=f"t = {steps}" if j == 0 else None)
        axis.plot(degrees, closed(ds.ntk_limit), color="black", ls="--", lw=1.6,
                  label=r"limit $\Theta_\infty^{(4)}$")
        axis.set(title=f"width n = {width} ({ds.sizes['init']} initializations, "
                       f"{int(w.float_bits)}-bit)\nstd over inits / limit: "
                       f"{float(w.spread.sel(time=0)):.3f};  "
                       r"$\|\Theta_t - \Theta_0\| / \|\Theta_0\|$: " f"{float(w.movement):.3f}",
                 xlabel=r"angle $\gamma$ of $x = (\cos\gamma, \sin\gamma)$ (degrees)")
        axis.set_xticks(np.arange(0, 361, 90))
        axis.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel(r"NTK $\Theta^{(4)}(x_0, x)$, $x_0 = (1, 0)$")
    np.atleast_1d(axes)[0].legend(loc="upper center")
    fig.suptitle("Jacot et al. Fig. 1: relu, L = 4, beta = 0.1; NTK before and after "
                 f"{steps} gradient-descent steps (rate 1.0) on f*(x) = x1 x2")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    nd.run_case(run, __doc__)
