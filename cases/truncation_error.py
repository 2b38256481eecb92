"""Truncation error of the NTH (Huang & Yau, Theorem 2.6): how err_f and err_K2 fall with the width m.

For every depth H, activation, width m and seed, the exact gradient flow (eq. 3) and the
p-level truncated hierarchy (eq. 15, p = 2, 3, 4) start from the same network, and

    err_f  = ||f(t) - f~(t)||_2        (eq. 18)     err_K2 = max_ab |K2(t) - K~2(t)|   (eq. 19)

are recorded at several times. Theory, from the scales (11)-(12) (K(r) ~ m^-(r/2-1) for even r,
one more factor m^-1/2 for odd r): truncating at p leaves out d/dt K(p) = -1/n K(p+1)[r], so

    even p:  err ~ m^(-p/2)          (p = 2: -1,  p = 4: -2)       [Theorem 2.6]
    odd  p:  err ~ m^(-(p-1)/2)      (p = 3: -1: K4 ~ 1/m like K3)

and at small t, err_f ~ t^p and err_K2 ~ t^(p-1). Exponents are fitted on the geometric mean over
seeds with a bootstrap-over-seeds 95% interval. The flow is solved with Dopri8 at rtol = atol =
1e-12 (Euclidean error norm over all parameters, save times stepped to exactly); a reference solve
at 1e-13 bounds its error, printed beside the smallest error measured.

The grid runs as resumable sweeps (one per depth, stored under truncation_error_H*.store/): stopped
and restarted, it keeps every finished point; `--workers N` spreads the points over Dask workers.

Writes truncation_error.nc and truncation_error.png.
"""

from pathlib import Path

import jax
import numpy as np
import xarray as xr

import nthdyn as nd

ORDERS = (2, 3, 4)
THEORY_WIDTH = {2: -1.0, 3: -1.0, 4: -2.0}  # exponent of m
THEORY_TIME = {"err_f": {p: float(p) for p in ORDERS}, "err_K2": {p: p - 1.0 for p in ORDERS}}


def settings(quick):
    if quick:
        return dict(n=4, d=3, depths={1: [16, 32, 64]}, activations=["tanh"], seeds=2,
                    times=[0.2, 0.5, 1.0], t_fit=1.0, width_t=32, n_boot=200)
    return dict(n=6, d=4, depths={1: [64, 128, 256, 512, 1024, 2048, 4096], 2: [64, 128, 256, 512, 1024]},
                activations=["tanh", "softplus"], seeds=6,
                times=[0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0], t_fit=1.0, width_t=1024,
                n_boot=2000)


def flow_and_errors(net, data, times, rtol=1e-12):
    """The exact flow, and err_f, err_K2 of every order against it, as (order, time).
    The kernels K2..K4 are computed once and serve every order."""
    flow = nd.solve(nd.GradientFlowProblem(net, data, (0.0, times[-1])), nd.Dopri8(),
                    saveat=times, rtol=rtol, atol=rtol, save_ntk=True)
    kernels = nd.initial_kernels(nd.NTHProblem(net, data, max(ORDERS), (0.0, times[-1])))
    out = [nd.compare(flow, nd.solve(nd.NTHProblem(net, data, p, (0.0, times[-1])), saveat=times,
                                     kernels=kernels, rtol=1e-12, atol=1e-12))
           for p in ORDERS]
    return flow, xr.concat(out, dim="order", combine_attrs="drop")[["err_f", "err_K2"]]


def run(out: Path, quick: bool, *, executor=None):
    cfg = settings(quick)
    times = np.asarray(cfg["times"])
    data = nd.sphere_data(n=cfg["n"], d=cfg["d"], key=jax.random.key(0))
    def member_errors(member):
        return flow_and_errors(member.network, member.data, times)[1]

    results = []
    for depth, widths in cfg["depths"].items():
        # One resumable sweep per depth (its widths differ); members are solved one at a time.
        net = nd.MLP(cfg["d"], widths[0], depth, cfg["activations"][0], key=0)
        problem = nd.GradientFlowProblem(net, data, (0.0, times[-1]))
        ensemble = nd.EnsembleProblem(problem, seeds=range(cfg["seeds"]), widths=widths,
                                      axes={"activation": cfg["activations"]}, master_seed=2020,
                                      output=member_errors, vmap=False)
        store = out / f"truncation_error{'_quick' if quick else ''}_H{depth}.store"
        ds = nd.solve(ensemble, store=store, executor=executor, progress=not quick)
        results.append(ds[["err_f", "err_K2", "retcode"]].expand_dims(depth=[depth]))
        median = ds.err_f.sel(time=cfg["t_fit"]).median("seed")
        for activation in ds.activation.values:
            print(f"  H={depth} {activation}: median over seeds of err_f(t={cfg['t_fit']:g}) vs m "
                  + "; ".join(f"p={p}: " + " ".join(f"{v:.1e}" for v in median.sel(order=p, activation=activation).values)
                              for p in ORDERS), flush=True)
    ds = xr.concat(results, dim="depth", join="outer", combine_attrs="drop")
    failed = int((ds.retcode.fillna(0) != 0).sum())
    if failed:
        print(f"  WARNING: {failed} members failed and are left out")
    for name in ("err_f", "err_K2"):
        ds[name] = ds[name].where(ds.retcode == 0)
        ds[name].attrs.update(long_name=results[0][name].attrs.get("long_name", name), units="1")
    ds.attrs.update(nd.provenance("NTH truncation error vs width and time (Theorem 2.6)",
                                  {**cfg, "orders": ORDERS, "flow_solver": "Dopri8", "flow_rtol": 1e-12,
                                   "master_seed": 2020, "data_seed": 0}))

    # Solver accuracy: a reference solve at a 10x tighter tolerance, at the widest H=1 network.
    depth, width = 1, cfg["depths"][1][-1]
    net = nd.MLP(cfg["d"], width, depth, cfg["activations"][0], key=nd.member_key(0, 2020))
    loose, _ = flow_and_errors(net, data, times)
    tight = nd.solve(nd.GradientFlowProblem(net, data, (0.0, times[-1])), nd.Dopri8(),
                     saveat=times, rtol=1e-13, atol=1e-13, save_ntk=True)
    solver_error = float(np.abs(np.asarray(loose.f) - np.asarray(tight.f)).max())
    smallest = float(ds.err_f.sel(depth=1, width=width, time=cfg["t_fit"]).min())
    ds.attrs["flow_solver_error_f"] = solver_error
    print(f"  flow solver check (H=1, m={width}): |f(rtol 1e-12) - f(rtol 1e-13)| <= {solver_error:.1e}; "
          f"smallest err_f measured there at t = {cfg['t_fit']:g}: {smallest:.1e}")

    geometric_mean = lambda a, dim: np.exp(np.log(a).mean(dim))  # noqa: E731
    rows = []
    for name in ("err_f", "err_K2"):
        fit = nd.fit_power_law(ds[name].sel(time=cfg["t_fit"]), dim="width", interval="bootstrap",
                               sample_dim="seed", statistic=geometric_mean, n_boot=cfg["n_boot"])
        theory = xr.DataArray([THEORY_WIDTH[p] for p in ORDERS], dims="order", coords={"order": list(ORDERS)})
        table = nd.compare_exponents(fit, theory, tolerance=0.25).reset_index()
        table.insert(0, "quantity", f"{name} vs m (t={cfg['t_fit']:g})")
        rows.append(table)
        for var in ("exponent", "exponent_low", "exponent_high"):
            ds[f"{name}_width_{var}"] = fit[var]
        small_t = ds[name].sel(depth=1, width=cfg["width_t"], activation=cfg["activations"][0]).sel(
            time=[t for t in times if t <= 1.0])
        fit_t = nd.fit_power_law(small_t, dim="time", interval="bootstrap", sample_dim="seed",
                                 statistic=geometric_mean, n_boot=cfg["n_boot"])
        theory_t = xr.DataArray([THEORY_TIME[name][p] for p in ORDERS], dims="order", coords={"order": list(ORDERS)})
        table_t = nd.compare_exponents(fit_t, theory_t, tolerance=0.25).reset_index()
        table_t.insert(0, "quantity", f"{name} vs t (H=1, m={cfg['width_t']})")
        rows.append(table_t)
    import pandas as pd

    summary = pd.concat(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ds.attrs["exponent_table"] = summary.to_csv(index=False)
    nc = nd.write_netcdf(ds, out / "truncation_error.nc")
    png = plot(ds, out / "truncation_error.png", cfg)
    print(f"  wrote {nc} and {png}")
    return ds


def plot(ds, path, cfg):
    import matplotlib.pyplot as plt

    depths = list(ds.depth.values)
    fig, axes = plt.subplots(2, len(depths) + 1, figsize=(5 * (len(depths) + 1), 8), constrained_layout=True, squeeze=False)
    geo = lambda a: np.exp(np.log(a).mean("seed"))  # noqa: E731
    activation = cfg["activations"][0]
    for row, name in enumerate(("err_f", "err_K2")):
        for col, depth in enumerate(depths):
            ax = axes[row, col]
            sub = ds[name].sel(depth=depth, activation=activation, time=cfg["t_fit"]).dropna("width", how="all")
            for p in ORDERS:
                curve = geo(sub.sel(order=p))
                line, = ax.loglog(curve.width, curve, "o-", label=f"p = {p}: fit {float(ds[f'{name}_width_exponent'].sel(order=p, depth=depth, activation=activation)):.2f} (theory {THEORY_WIDTH[p]:g})")
                ax.loglog(np.repeat(sub.width.values[:, None], sub.sizes["seed"], 1), sub.sel(order=p).transpose("width", "seed"), ".", color=line.get_color(), alpha=0.3)
            ax.set(xlabel="width m", ylabel=f"{name} at t = {cfg['t_fit']:g}", title=f"{name} vs width, H = {depth}, {activation}")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, which="both")
        ax = axes[row, -1]
        sub = ds[name].sel(depth=1, activation=activation, width=cfg["width_t"])
        for p in ORDERS:
            ax.loglog(sub.time, geo(sub.sel(order=p)), "o-", label=f"p = {p} (small-t theory t^{THEORY_TIME[name][p]:g})")
        ax.set(xlabel="training time t", ylabel=name, title=f"{name} vs t, H = 1, m = {cfg['width_t']}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Exact gradient flow vs truncated NTH: geometric mean over seeds (dots: single seeds)")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    nd.run_case(run, __doc__)
