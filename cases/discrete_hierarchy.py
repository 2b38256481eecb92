"""The discrete hierarchy (Huang & Yau eq. (29)) against true gradient descent, over m and eta.

How the error of the truncated hierarchy of discrete gradient descent falls with the width m and
the step size eta.

For every seed and width, a two-layer tanh network is trained for K steps of gradient descent
(theta <- theta - (eta/n) J^T r) and the order-s discrete hierarchy (nd.DiscreteNTHProblem,
s = 2, 3, 4) is stepped from the same network's kernels; the error is

    err_f = ||f_GD(K) - f~_s(K)||_2   over the training set.

Step sizes are given as x = eta lambda_0 / n (lambda_0 = lambda_max(K2) at step 0, the top
eigenvalue of the n x n K2 that starts the hierarchy), below the stability edge x = 2. Theory (kernel scales of eq. (11): a kernel with r slots is
~ m^-(r/2-1), odd r one more m^-1/2): the order-s truncation leaves out kernels with s + 1
slots, as the continuous NTH does, so err_f ~ m^-1, m^-1, m^-2 for s = 2, 3, 4; and at a fixed
number of steps every left-out term carries eta^s (one step of order s is exact to eta^(s-1)),
so err_f ~ eta^s. Exponents in m are fitted at x = 0.4 on the geometric mean over seeds with a
bootstrap-over-seeds 95% interval; exponents in eta at the middle width on x <= 0.4.

Writes discrete_hierarchy.nc and discrete_hierarchy.png.
"""

import time
from pathlib import Path

import jax
import numpy as np
import xarray as xr

import nthdyn as nd

ORDERS = (2, 3, 4)
THEORY_WIDTH = {2: -1.0, 3: -1.0, 4: -2.0}


def settings(quick):
    if quick:
        # compile-bound: one kernel program and one gradient-descent program per width
        return dict(n=3, d=3, widths=[8, 16, 32], seeds=2, steps=3, xs=[0.1, 0.2, 0.4],
                    x_width=0.4, width_eta=16, n_boot=200)
    return dict(n=6, d=4, widths=[64, 128, 256, 512, 1024, 2048, 4096], seeds=4, steps=10,
                xs=[0.05, 0.1, 0.2, 0.4, 0.8, 1.2, 1.6, 1.9], x_width=0.4, width_eta=512,
                n_boot=2000)


def errors(net, data, xs, steps):
    """err_f of every order at every x, as (order, x)."""
    problem = nd.DiscreteNTHProblem(net, data, max(ORDERS), 0.1, steps)
    kernels = nd.initial_discrete_kernels(problem)  # the order-4 kernels serve every order
    lam0 = float(np.linalg.eigvalsh(np.asarray(kernels.K[0]))[-1])  # lambda_max(K2), n x n
    out = np.zeros((len(ORDERS), len(xs)))
    for k, x in enumerate(xs):
        eta = x * data.n / lam0
        gd = nd.solve(nd.GradientDescentProblem(net, data, steps, eta), saveat=[steps])
        for i, s in enumerate(ORDERS):
            sol = nd.solve(nd.remake(problem, order=s, learning_rate=eta), kernels=kernels,
                           saveat=[steps], throw=False)
            out[i, k] = np.linalg.norm(np.asarray(gd.f[-1]) - np.asarray(sol.f[-1]))
    return out


def run(out: Path, quick: bool):
    cfg = settings(quick)
    data = nd.sphere_data(n=cfg["n"], d=cfg["d"], key=jax.random.key(0))
    err = np.zeros((cfg["seeds"], len(cfg["widths"]), len(ORDERS), len(cfg["xs"])))
    start = time.perf_counter()
    for j, width in enumerate(cfg["widths"]):
        for seed in range(cfg["seeds"]):
            net = nd.MLP(cfg["d"], width, 1, "tanh", key=nd.member_key(seed, 2020))
            err[seed, j] = errors(net, data, cfg["xs"], cfg["steps"])
        gm = np.exp(np.log(err[:, j]).mean(0))
        print(f"  m={width:5d}: geometric-mean err_f at x = eta lambda_0/n = "
              + ", ".join(f"{x:g}" for x in cfg["xs"]) + "\n" + "\n".join(
                  f"          s={s}: " + " ".join(f"{v:.1e}" for v in gm[i]) for i, s in enumerate(ORDERS))
              + f"   ({time.perf_counter() - start:.0f} s)", flush=True)
    elapsed = time.perf_counter() - start
    ds = xr.Dataset(
        {"err_f": (("seed", "width", "order", "x"), err,
                   {"long_name": "||f_GD - f~_s||_2 after the steps", "units": "1",
                    "equation": "Huang & Yau eq. (29)"})},
        coords={"seed": ("seed", np.arange(cfg["seeds"]), {"long_name": "seed", "units": "1"}),
                "width": ("width", cfg["widths"], {"long_name": "hidden width m", "units": "1"}),
                "order": ("order", list(ORDERS), {"long_name": "truncation order s", "units": "1"}),
                "x": ("x", cfg["xs"], {"long_name": "eta lambda_0 / n (the edge is 2)", "units": "1"})})

    geometric_mean = lambda a, dim: np.exp(np.log(a).mean(dim))  # noqa: E731
    fit_m = nd.fit_power_law(ds.err_f.sel(x=cfg["x_width"]), dim="width", interval="bootstrap",
                             sample_dim="seed", statistic=geometric_mean, n_boot=cfg["n_boot"])
    small = [x for x in cfg["xs"] if x <= 0.4]
    by_eta = ds.err_f.sel(width=cfg["width_eta"], x=small).rename(x="eta_x")
    fit_eta = nd.fit_power_law(by_eta, dim="eta_x", interval="bootstrap", sample_dim="seed",
                               statistic=geometric_mean, n_boot=cfg["n_boot"])
    theory = xr.DataArray([THEORY_WIDTH[s] for s in ORDERS], dims="order", coords={"order": list(ORDERS)})
    table = nd.compare_exponents(fit_m, theory, tolerance=0.25).reset_index()
    print("  err_f vs m at x = %g (bootstrap 95%%):" % cfg["x_width"])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for s in ORDERS:
        fit = fit_eta.sel(order=s)
        print(f"  err_f vs eta at m={cfg['width_eta']}, s={s}: exponent {float(fit.exponent):.2f} "
              f"[{float(fit.exponent_low):.2f}, {float(fit.exponent_high):.2f}] (theory {s})")
    gm = geometric_mean(ds.err_f.sel(width=cfg["width_eta"]), "seed")
    gain = gm.sel(order=4) / gm.sel(order=2)
    print(f"  err(s=4) / err(s=2) at m={cfg['width_eta']} by x: "
          + ", ".join(f"{x:g}: {float(g):.2g}" for x, g in zip(cfg["xs"], gain.values)))
    for name, fit in (("width", fit_m), ("eta", fit_eta)):
        for var in ("exponent", "exponent_low", "exponent_high"):
            ds[f"err_f_{name}_{var}"] = fit[var]
    ds.attrs.update(nd.provenance("Discrete hierarchy (eq. 29) vs gradient descent",
                                  {**cfg, "orders": ORDERS, "master_seed": 2020, "elapsed_s": elapsed}))
    print(f"  {cfg['seeds'] * len(cfg['widths'])} networks in {elapsed:.0f} s")
    nc = nd.write_netcdf(ds, out / "discrete_hierarchy.nc")
    png = plot(ds, out / "discrete_hierarchy.png", cfg)
    print(f"  wrote {nc} and {png}")
    return ds


def plot(ds, path, cfg):
    import matplotlib.pyplot as plt

    geo = lambda a: np.exp(np.log(a).mean("seed"))  # noqa: E731
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    for s in ORDERS:
        curve = geo(ds.err_f.sel(order=s, x=cfg["x_width"]))
        axes[0].loglog(curve.width, curve, "o-", label=f"s = {s}: slope "
                       f"{float(ds.err_f_width_exponent.sel(order=s)):.2f} (theory {THEORY_WIDTH[s]:g})")
        curve = geo(ds.err_f.sel(order=s, width=cfg["width_eta"]))
        axes[1].loglog(curve.x, curve, "o-", label=f"s = {s}: slope (x <= 0.4) "
                       f"{float(ds.err_f_eta_exponent.sel(order=s)):.2f} (theory {s})")
    axes[0].set(xlabel="width m", ylabel=f"err_f after {cfg['steps']} steps",
                title=f"vs width, eta lambda_0 / n = {cfg['x_width']:g}")
    axes[1].axvline(2, color="gray", lw=0.8)
    axes[1].set(xlabel="eta lambda_0 / n (edge at 2)", ylabel=f"err_f after {cfg['steps']} steps",
                title=f"vs step size, m = {cfg['width_eta']}")
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Order-s discrete hierarchy vs gradient descent (geometric mean over seeds)")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    nd.run_case(run, __doc__)
