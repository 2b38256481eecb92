"""The stability edge of gradient descent and the catapult phase (Lewkowycz et al. 2020).

Two-layer networks (depth H = 1, Huang-Yau parametrization) with identity, tanh and relu
activations are trained by gradient descent on n points, L = 1/(2n) sum r^2, so a step is
theta <- theta - (eta/n) J^T r and the linear stability edge is eta_crit = 2n / lambda_0,
lambda_0 = lambda_max(K2) at initialization (Lanczos on J (J^T v), nd.ntk_lambda_max).

For each activation and width, eta * lambda_0 / n runs over a grid from 0.5 to well beyond
divergence and every run is classified by nd.phase_report: lazy (the loss never rises by
more than 10%), catapult (it rises, comes back below its start, and lambda_max(K2) ends below
2n/eta), divergent (otherwise). The two boundaries are then located by bisection in log eta:

    eta_crit: lazy -> not lazy          (theory: 2n / lambda_0)
    eta_max:  converges -> divergent    (Lewkowycz et al.: 2 eta_crit for wide linear nets)

Also recorded: lambda_max at the end against 2n/eta in the catapult phase, and the NTK's
relative change ||K2_end - K2_0||_F / ||K2_0||_F against width at a lazy and at a catapult
step size (power-law fits with t intervals: ~1/m when lazy, flat in the catapult).
Low-rank updates do not help here: the first layer is m x d with d = 8, smaller than n steps.

Writes catapult.nc (grid and boundaries) and catapult.png (the phase diagram).
"""

import time
from pathlib import Path

import jax
import numpy as np
import xarray as xr

import nthdyn as nd

ACTIVATIONS = ("identity", "tanh", "relu")
PHASE_COLORS = {"lazy": "tab:blue", "catapult": "tab:orange", "divergent": "tab:red"}


def settings(quick):
    if quick:
        return dict(n=8, d=4, activations=("identity",), widths=[32, 64, 128], steps=60,
                    grid=np.geomspace(0.5, 16, 5), bisections=2, lazy_x=1.0, catapult_x=3.0)
    return dict(n=16, d=8, activations=ACTIVATIONS, widths=[256, 1024, 4096, 16384], steps=400,
                grid=np.geomspace(0.5, 16, 19), bisections=7, lazy_x=1.0, catapult_x=3.0)


def run_one(net, data, x, lam0, steps):
    """Gradient descent at eta = x n / lambda_0: the phase report."""
    eta = x * data.n / lam0
    sol = nd.solve(nd.GradientDescentProblem(net, data, steps, eta), save_ntk=True, throw=False)
    return nd.phase_report(sol)


def bisect(net, data, lam0, steps, lo, hi, is_high, iterations):
    """The boundary in x between `lo` (not is_high) and `hi` (is_high), in log x."""
    for _ in range(iterations):
        mid = np.sqrt(lo * hi)
        if is_high(run_one(net, data, mid, lam0, steps)):
            hi = mid
        else:
            lo = mid
    return np.sqrt(lo * hi), hi / lo


def run(out: Path, quick: bool):
    cfg = settings(quick)
    data = nd.sphere_data(n=cfg["n"], d=cfg["d"], key=jax.random.key(0))
    grid, n, activations = cfg["grid"], cfg["n"], cfg["activations"]
    shape = (len(activations), len(cfg["widths"]))
    phase = np.zeros(shape + (len(grid),), np.int32)
    peak, lam_end, change = (np.full(shape + (len(grid),), np.nan) for _ in range(3))
    lam0s, x_crit, x_max, x_crit_width, x_max_width = (np.full(shape, np.nan) for _ in range(5))
    start = time.perf_counter()
    for i, activation in enumerate(activations):
        for j, width in enumerate(cfg["widths"]):
            net = nd.MLP(cfg["d"], width, 1, activation, key=1)
            lam0 = float(nd.ntk_lambda_max(net, data.X))
            lam0s[i, j] = lam0
            for k, x in enumerate(grid):
                rep = run_one(net, data, x, lam0, cfg["steps"])
                phase[i, j, k] = rep.code
                peak[i, j, k] = rep.loss_peak / rep.loss_initial
                lam_end[i, j, k] = rep.lambda_final * rep.learning_rate / (2 * n)
                change[i, j, k] = rep.ntk_change
            lazy = np.flatnonzero(phase[i, j] == 0)
            converged = np.flatnonzero(phase[i, j] <= 1)
            if lazy.size and lazy[-1] + 1 < len(grid):
                x_crit[i, j], x_crit_width[i, j] = bisect(
                    net, data, lam0, cfg["steps"], grid[lazy[-1]], grid[lazy[-1] + 1],
                    lambda r: r.phase != "lazy", cfg["bisections"])
            if converged.size and converged[-1] + 1 < len(grid):
                x_max[i, j], x_max_width[i, j] = bisect(
                    net, data, lam0, cfg["steps"], grid[converged[-1]], grid[converged[-1] + 1],
                    lambda r: r.phase == "divergent", cfg["bisections"])
            print(f"  {activation:8s} m={width:6d}: lambda_0={lam0:.4f}  eta_crit / (2n/lambda_0) = "
                  f"{x_crit[i, j] / 2:.4f}  eta_max / eta_crit = {x_max[i, j] / x_crit[i, j]:.3f}  "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    elapsed = time.perf_counter() - start

    coords = {"activation": list(activations), "width": cfg["widths"], "x": grid}
    dims = ("activation", "width", "x")
    ds = xr.Dataset(
        {"phase": (dims, phase, {
            "long_name": "phase of the gradient-descent run (nthdyn.classify_phase)", "units": "1",
            "flag_values": np.arange(3, dtype=np.int32), "flag_meanings": " ".join(nd.PHASES)}),
         "loss_peak_ratio": (dims, peak, {"long_name": "max loss / initial loss", "units": "1"}),
         "lambda_end_ratio": (dims, lam_end, {"long_name": "lambda_max(K2) at the end times eta / (2n)",
                                              "units": "1"}),
         "ntk_change": (dims, change, {"long_name": "relative change of the NTK ||K2_end - K2_0||_F "
                                                     "/ ||K2_0||_F", "units": "1"}),
         "lambda_0": (dims[:2], lam0s, {"long_name": "lambda_max(K2) at initialization (Lanczos)",
                                        "units": "1"}),
         "x_crit": (dims[:2], x_crit, {"long_name": "measured eta_crit lambda_0 / n (theory 2)",
                                       "units": "1"}),
         "x_crit_bracket": (dims[:2], x_crit_width, {"long_name": "ratio of the bisection bracket of x_crit",
                                                     "units": "1"}),
         "x_max": (dims[:2], x_max, {"long_name": "measured eta_max lambda_0 / n", "units": "1"}),
         "x_max_bracket": (dims[:2], x_max_width, {"long_name": "ratio of the bisection bracket of x_max",
                                                   "units": "1"})},
        coords={"activation": ("activation", coords["activation"], {"long_name": "activation function sigma"}),
                "width": ("width", coords["width"], {"long_name": "hidden width m", "units": "1"}),
                "x": ("x", grid, {"long_name": "eta lambda_0 / n (the edge is 2)", "units": "1"})})

    # NTK relative change vs width in each phase (single network per width: t interval over widths)
    fits = {}
    for label, x in (("lazy", cfg["lazy_x"]), ("catapult", cfg["catapult_x"])):
        k = int(np.argmin(np.abs(np.log(grid / x))))
        fits[label] = nd.fit_power_law(ds.ntk_change.isel(x=k), dim="width")
        for var in ("exponent", "exponent_low", "exponent_high"):
            ds[f"ntk_change_{label}_{var}"] = fits[label][var]
    print(f"  edge: eta_crit / (2n / lambda_0) over all activations and widths: "
          f"{np.nanmin(x_crit) / 2:.4f} .. {np.nanmax(x_crit) / 2:.4f} (bisection bracket "
          f"{np.nanmax(x_crit_width):.3f})")
    for i, activation in enumerate(activations):
        ratios = x_max[i] / x_crit[i]
        cat = phase[i, -1] == 1
        lam_text = (f"{np.nanmin(lam_end[i, -1][cat]):.3f} .. {np.nanmax(lam_end[i, -1][cat]):.3f}"
                    if cat.any() else "none")
        print(f"  {activation:8s}: eta_max / eta_crit by width: " + ", ".join(f"{r:.3f}" for r in ratios)
              + f";  catapult runs at m={cfg['widths'][-1]}: lambda_end eta/(2n) = {lam_text}")
        for label in fits:
            fit = fits[label].sel(activation=activation)
            x = cfg["lazy_x"] if label == "lazy" else cfg["catapult_x"]
            print(f"            NTK change vs m, {label} (x = {x:g}): exponent {float(fit.exponent):.2f} "
                  f"[{float(fit.exponent_low):.2f}, {float(fit.exponent_high):.2f}]")
    print(f"  {phase.size + 2 * cfg['bisections'] * shape[0] * shape[1]} gradient-descent runs "
          f"of {cfg['steps']} steps in {elapsed:.0f} s")
    ds.attrs.update(nd.provenance("Gradient descent: stability edge and catapult phase",
                                  {**{k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                      for k, v in cfg.items()}, "elapsed_s": elapsed}))
    nc = nd.write_netcdf(ds, out / "catapult.nc")
    png = plot(ds, out / "catapult.png", cfg)
    print(f"  wrote {nc} and {png}")
    return ds


def plot(ds, path, cfg):
    import matplotlib.pyplot as plt

    activations = list(ds.activation.values)
    fig, axes = plt.subplots(2, len(activations), figsize=(5 * len(activations), 8),
                             constrained_layout=True, squeeze=False)
    for i, activation in enumerate(activations):
        ax = axes[0, i]
        sub = ds.sel(activation=activation)
        for code, name in enumerate(nd.PHASES):
            w, x = np.nonzero(sub.phase.values == code)
            ax.scatter(sub.width.values[w], sub.x.values[x], c=PHASE_COLORS[name], label=name, s=30)
        ax.plot(sub.width, sub.x_crit, "k^-", label="measured eta_crit")
        ax.plot(sub.width, sub.x_max, "kv--", label="measured eta_max")
        ax.axhline(2, color="gray", lw=0.8)
        ax.axhline(4, color="gray", lw=0.8, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="width m", ylabel="eta lambda_0 / n",
               title=f"{activation}: phase (edge 2, linear-theory eta_max 4)")
        ax.legend(fontsize=7)
        ax = axes[1, i]
        for label, x in (("lazy", cfg["lazy_x"]), ("catapult", cfg["catapult_x"])):
            k = int(np.argmin(np.abs(np.log(ds.x.values / x))))
            ax.loglog(sub.width, sub.ntk_change.isel(x=k), "o-",
                      label=f"{label}, eta lambda_0/n = {float(ds.x[k]):.2f}: slope "
                            f"{float(ds[f'ntk_change_{label}_exponent'].sel(activation=activation)):.2f}")
        ax.set(xlabel="width m", ylabel="||K2_end - K2_0|| / ||K2_0||", title=f"{activation}: NTK change")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Gradient descent on two-layer networks: lazy, catapult and divergent phases")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    nd.run_case(run, __doc__)
