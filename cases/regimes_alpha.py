"""Lazy (NTK) vs rich (mean-field) training of two-layer networks as alpha grows (paper 002, Fig. 7).

f = (alpha/m) sum_j u_j tanh(theta_j . x) (paper 002, Fig. 7, Table I): how far the parameters and
the NTK move as the scale alpha grows.

For widths m and scales alpha from 1/2 to 256 (beyond sqrt(m)), a TwoLayer trained by gradient flow
on n = 8 points of the sphere in R^3 (N(0, 1) labels) records, at the end of training, the relative
movement of each layer ||P(T) - P(0)|| / ||P(0)|| (theta, u) and the NTK's relative change
||K(T) - K(0)||_F / ||K(0)||_F. The time scale c = m / alpha^2 makes the NTK in function space
alpha-independent (df/dt = -(1/n) K_hat r, K_hat -> K_inf), so one horizon T trains every alpha as far;
the path of the flow does not depend on c, only its clock. Two initializations: symmetric pairs
(u, theta), (-u, theta) with f(theta_0) = 0 (centered; docs/two_layer.md derives movement ~ C/alpha
for alpha >> 1 and NTK change ~ B/alpha^2), and plain Gaussian (f(theta_0) ~ alpha/sqrt(m): beyond
alpha ~ sqrt(m) the movement stops falling and saturates at ~1/sqrt(m)).

Measured: the slope of movement vs alpha on the lazy branch (alpha >= 8, symmetric; theory -1), the
crossover alpha*(m) where the NTK change falls to 1 (theory: alpha* = O(1), exponent 0 in m, Geiger
et al. 2019 translated), and the NTK change at alpha = sqrt(m) (uncentered Huang-Yau network; theory
~ 1/m). Exponents are fitted with bootstrap-over-seeds 95% intervals.

Writes regimes_alpha.nc and regimes_alpha.png.
"""

import time
from pathlib import Path

import numpy as np
import xarray as xr

import nthdyn as nd


def settings(quick):
    if quick:
        return dict(n=6, d=3, T=20.0, t_early=2.0, widths=[8, 16, 32], hy_widths=[8, 16, 32],
                    alphas=[0.5, 2.0, 4.0, 8.0, 16.0], seeds=2, inits=["symmetric"], lazy_min=4.0,
                    n_boot=200)
    return dict(n=8, d=3, T=3000.0, t_early=10.0, widths=[128, 512, 2048],
                hy_widths=[128, 512, 2048, 8192],
                alphas=[0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0], seeds=4,
                inits=["symmetric", "gaussian"], lazy_min=32.0, n_boot=2000)


def initial(cfg, width, init, seed):
    """The TwoLayer(alpha = 1) weights (theta, u) of seed `seed` (symmetric pairs or Gaussian)."""
    net = nd.TwoLayer(cfg["d"], width, alpha=1.0, activation="tanh", symmetric=init == "symmetric",
                      key=nd.member_key(seed, 11))
    return net.theta, net.u


def kernel(theta, u_tilde, alpha, X):
    """The NTK of TwoLayer(alpha) at (theta, u = u_tilde / alpha), from the alpha = 1 network at
    (theta, u_tilde): K_alpha = K_theta + alpha^2 K_u, where K_1 = K_theta + K_u (one
    compilation per width for every alpha)."""
    full = nd.TwoLayer.from_weights(theta, u_tilde, alpha=1.0, activation="tanh")
    readout = nd.TwoLayer.from_weights(theta, u_tilde, alpha=1.0, activation="tanh", train="readout")
    K_u = np.asarray(nd.ntk(readout, X))
    return np.asarray(nd.ntk(full, X)) + (alpha**2 - 1.0) * K_u


def train(cfg, data, width, alpha, theta, u, c, T, K_init):
    """TwoLayer(alpha) from (theta, u) trained by d theta/dt = -c grad L up to T, solved as the
    alpha = 1 network from (theta, alpha u) with time scales (c, c alpha^2) (the same flow:
    f_alpha(theta, u) = f_1(theta, alpha u); tests/test_two_layer.py checks it), and on the clock
    t' = t T_max / T up to cfg["T"] = T_max with time scales (c, c alpha^2) T / T_max (the same path),
    so that every alpha and horizon T shares one compiled solve per width (the solve's end time
    is a constant of its program). `K_init`: the NTK of TwoLayer(1) at (theta, u), so that
    K(0) = alpha^2 K_init (`kernel` at u_tilde = alpha u). Returns the movement of (theta, u), the
    NTK change, the loss."""
    net = nd.TwoLayer.from_weights(theta, alpha * u, alpha=1.0, activation="tanh")
    T_max, clock = cfg["T"], T / cfg["T"]
    problem = nd.GradientFlowProblem(net, data, (0.0, T_max), time_scale=(c * clock, c * clock * alpha**2))
    sol = nd.solve(problem, saveat=[0.0, T_max], rtol=1e-8, atol=1e-8, max_steps=400_000,
                   throw=False)
    end = sol.network
    movement = np.asarray(nd.relative_movement(end, net))  # ratios: u and alpha u alike
    K0, K1 = alpha**2 * K_init, kernel(end.theta, end.u, alpha, data.X)
    change = np.linalg.norm(K1 - K0) / np.linalg.norm(K0)
    return movement, change, float(sol.loss[-1]), sol.retcode


def sweep(cfg, data, width, init, alphas, scale, T):
    """Every seed and alpha at one width: arrays (seed, alpha, ...)."""
    out = {"movement": [], "ntk_change": [], "loss_end": [], "status": []}
    for seed in range(cfg["seeds"]):
        theta, u = initial(cfg, width, init, seed)
        K_init = kernel(theta, u, 1.0, data.X)
        rows = [train(cfg, data, width, a, theta, u, scale(width, a), T, K_init) for a in alphas]
        for name, values in zip(out, zip(*rows)):
            out[name].append(values)
    return {name: np.asarray(values) for name, values in out.items()}


def huang_yau(cfg, data, width):
    """The NTK change of TwoLayer(alpha = sqrt(m)) (the Huang-Yau MLP, Gaussian init, c = 1) at
    t_early and at T, over the seeds: (seed, 2)."""
    alpha = float(np.sqrt(width))
    return np.stack([sweep(cfg, data, width, "gaussian", [alpha], lambda m, a: 1.0, T)["ntk_change"][:, 0]
                     for T in (cfg["t_early"], cfg["T"])], axis=-1)


def crossover(ntk_change, alphas, level=1.0):
    """alpha where the NTK change (falling with alpha) crosses `level`, by log interpolation."""
    y = np.log(np.asarray(ntk_change)) - np.log(level)
    x = np.log(np.asarray(alphas))
    for i in range(len(x) - 1):
        if y[i] >= 0 > y[i + 1]:
            return float(np.exp(x[i] + (x[i + 1] - x[i]) * y[i] / (y[i] - y[i + 1])))
    return np.nan


def run(out: Path, quick: bool):
    start = time.perf_counter()
    cfg = settings(quick)
    data = nd.sphere_data(n=cfg["n"], d=cfg["d"], key=0)
    alphas, widths, seeds = cfg["alphas"], cfg["widths"], cfg["seeds"]
    shape = (len(cfg["inits"]), len(widths), seeds, len(alphas))
    movement, change, loss, status = np.empty(shape + (2,)), np.empty(shape), np.empty(shape), \
        np.empty(shape, dtype=np.int32)
    hy = np.stack([huang_yau(cfg, data, m) for m in cfg["hy_widths"]])  # (width, seed, time)
    print(f"  NTK change at alpha = sqrt(m), t = {cfg['t_early']:g} and {cfg['T']:g}: " + ", ".join(
        f"m={m}: {v[0]:.3g}, {v[1]:.3g}" for m, v in zip(cfg["hy_widths"], hy.mean(1)))
        + f" [{time.perf_counter() - start:.0f} s]", flush=True)
    for j, width in enumerate(widths):
        for i, init in enumerate(cfg["inits"]):
            r = sweep(cfg, data, width, init, alphas, lambda m, a: m / a**2, cfg["T"])
            movement[i, j], change[i, j], loss[i, j], status[i, j] = (
                r["movement"], r["ntk_change"], r["loss_end"], r["status"])
            print(f"  {init:9s} m={width:5d}: theta movement (seed mean) "
                  + ", ".join(f"{a:g}: {v:.3g}" for a, v in zip(alphas, movement[i, j, :, :, 0].mean(0)))
                  + f" [{time.perf_counter() - start:.0f} s]", flush=True)
    dims = ("init", "width", "seed", "alpha")
    ds = xr.Dataset({"movement": (dims + ("layer",), movement), "ntk_change": (dims, change),
                     "loss_end": (dims, loss), "status": (dims, status),
                     "ntk_change_sqrt_m": (("hy_width", "seed", "hy_time"), hy)},
                    coords={"init": cfg["inits"]})
    ds = ds.assign_coords(
        alpha=("alpha", alphas, {"long_name": "scale alpha", "units": "1"}),
        width=("width", widths, {"long_name": "hidden width m", "units": "1"}),
        seed=("seed", np.arange(seeds), {"long_name": "seed: key member_key(seed, 11)", "units": "1"}),
        layer=("layer", [0, 1], {"long_name": "linear map (0: theta, 1: u)", "units": "1"}),
        hy_width=("hy_width", cfg["hy_widths"], {"long_name": "width m of the alpha = sqrt(m) runs",
                                                  "units": "1"}),
        hy_time=("hy_time", [cfg["t_early"], cfg["T"]], {"long_name": "training time t", "units": "1"}))
    failed = int((ds.status != 0).sum())
    if failed:
        print(f"  WARNING: {failed} members did not finish; they are left out")
    for name in ("movement", "ntk_change", "loss_end"):
        ds[name] = ds[name].where(ds.status == 0)

    # 1. slope of the movement vs alpha on the lazy branch (symmetric init)
    lazy = ds.movement.sel(init="symmetric").where(ds.alpha >= cfg["lazy_min"], drop=True)
    slope = nd.fit_power_law(lazy, dim="alpha", interval="bootstrap", sample_dim="seed",
                             n_boot=cfg["n_boot"])
    print("  movement ~ alpha^k on the lazy branch (symmetric init, alpha >= "
          f"{cfg['lazy_min']:g}); theory k = -1:")
    print(nd.compare_exponents(slope, -1.0, tolerance=0.1).reset_index().to_string(index=False,
                                                                       float_format=lambda v: f"{v:.3f}"))
    # 2. the NTK change at alpha = sqrt(m) vs m
    hy_fit = nd.fit_power_law(ds.ntk_change_sqrt_m, dim="hy_width", interval="bootstrap",
                              sample_dim="seed", n_boot=cfg["n_boot"])
    for t in ds.hy_time.values:
        fit = hy_fit.sel(hy_time=t)
        print(f"  NTK change at alpha = sqrt(m), t = {t:g}: exponent {float(fit.exponent):.3f} "
              f"[{float(fit.exponent_low):.3f}, {float(fit.exponent_high):.3f}] (theory -1)")
    # 3. the crossover alpha*(m): NTK change = 1
    star = xr.apply_ufunc(lambda v: crossover(v, cfg["alphas"]),
                          ds.ntk_change.sel(init="symmetric"), input_core_dims=[["alpha"]],
                          vectorize=True)
    ds["alpha_star"] = star
    star_fit = nd.fit_power_law(star, dim="width", interval="bootstrap", sample_dim="seed",
                                n_boot=cfg["n_boot"])
    print("  crossover alpha*(m) (NTK change = 1): " + ", ".join(
        f"m={m}: {float(star.sel(width=m).mean()):.3g}" for m in cfg["widths"])
        + f"; exponent {float(star_fit.exponent):.3f} [{float(star_fit.exponent_low):.3f}, "
          f"{float(star_fit.exponent_high):.3f}] (derived 0)")
    for name, fit in (("movement_slope", slope), ("ntk_sqrt_m", hy_fit), ("alpha_star", star_fit)):
        for var in ("exponent", "exponent_low", "exponent_high"):
            ds[f"{name}_{var}"] = fit[var]
    attrs = {
        "movement": ("relative movement ||P(T) - P(0)|| / ||P(0)|| at the end of training", "paper 002 Fig. 7"),
        "ntk_change": ("relative NTK change ||K(T) - K(0)||_F / ||K(0)||_F", "Huang & Yau eq. (7)"),
        "loss_end": ("training loss at T", "Huang & Yau Section 1"),
        "status": ("solver status (nthdyn.RESULTS)", ""),
        "ntk_change_sqrt_m": ("relative NTK change at alpha = sqrt(m) (Huang-Yau network), Gaussian init, c = 1", "Huang & Yau Cor. 2.4"),
        "alpha_star": ("alpha where the NTK change equals 1 (symmetric init)", "docs/two_layer.md"),
    }
    for name, (long_name, equation) in attrs.items():
        ds[name].attrs.update(long_name=long_name, units="1", equation=equation)
    for name in list(ds.data_vars):
        ds[name].attrs.setdefault("units", "1")
        ds[name].attrs.setdefault("long_name", name.replace("_", " "))
    ds["init"].attrs.update(long_name="initialization: symmetric pairs (f(theta_0) = 0) or Gaussian",
                            units="1")
    ds.attrs.update(nd.provenance("Lazy vs rich regimes of the two-layer network (paper 002 Fig. 7)",
                                  {**cfg, "activation": "tanh", "master_seed": 11}))
    nc = nd.write_netcdf(ds, out / "regimes_alpha.nc")
    png = plot(ds, out / "regimes_alpha.png", cfg)
    print(f"  wrote {nc} and {png} in {time.perf_counter() - start:.0f} s")
    return ds


def plot(ds, path, cfg):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), constrained_layout=True)
    a = ds.alpha.values
    for init, style in zip(ds.init.values, ("o-", "s--")):
        for width in ds.width.values:
            sel = ds.sel(init=init, width=width)
            line, = axes[0].loglog(a, sel.movement.isel(layer=0).mean("seed"), style,
                                   label=f"{init}, m = {width}")
            axes[1].loglog(a, sel.ntk_change.mean("seed"), style, color=line.get_color(),
                           label=f"{init}, m = {width}")
            axes[0].axvline(np.sqrt(width), color=line.get_color(), alpha=0.2)
    ref = float(ds.movement.sel(init="symmetric").isel(layer=0, width=0).mean("seed").isel(alpha=-1)) * a[-1]
    axes[0].loglog(a, ref / a, "k:", label="C / alpha")
    axes[0].set(xlabel="alpha", ylabel="||theta(T) - theta(0)|| / ||theta(0)||",
                title=f"theta movement (slope {float(ds.movement_slope_exponent.isel(layer=0).mean()):.2f})")
    axes[1].axhline(1.0, color="k", lw=0.5)
    axes[1].set(xlabel="alpha", ylabel="||K(T) - K(0)|| / ||K(0)||", title="NTK change")
    w = ds.hy_width.values
    for t in ds.hy_time.values:
        axes[2].loglog(w, ds.ntk_change_sqrt_m.sel(hy_time=t).mean("seed"), "o-",
                       label=f"NTK change at alpha = sqrt(m), t = {t:g}")
    axes[2].loglog(w, float(ds.ntk_change_sqrt_m.isel(hy_time=0).mean("seed")[0]) * w[0] / w, "k:",
                   label="1/m")
    axes[2].loglog(ds.width, ds.alpha_star.mean("seed"), "s-", label="crossover alpha*(m)")
    axes[2].set(xlabel="width m", title="NTK change at sqrt(m); crossover")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    nd.run_case(run, __doc__)
