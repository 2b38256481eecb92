"""The NTK moves at rate O(1/m) (Huang & Yau, Corollary 2.4): sup over t in [0, T] of |d/dt K2| ~ m^-1.

Along the exact gradient flow (eq. 3), d/dt K2 = -1/n K3[r] (eq. 10) with K3 ~ 1/m, so
sup_t max_ab |d/dt K2(t)| falls like 1/m: the NTK of a wide network is nearly frozen. For each
depth, width and seed a tanh MLP is trained on n = 8 points of the sphere in R^4 and K2 is saved
at 201 times; d/dt K2 is the exact contraction -1/n K3[r] at t = 0 and, over [0, T], second-order
central differences of the saved K2 (their relative error is O(h^2), independent of m). The exponent
is fitted on the seed mean with a bootstrap-over-seeds 95% interval.

The grid runs as resumable sweeps (ntk_drift_H*.store/): stopped and restarted, it keeps every
finished point; `--workers N` spreads the points over Dask workers.

Writes ntk_drift.nc and ntk_drift.png.
"""

from pathlib import Path

import jax
import numpy as np
import xarray as xr

import nthdyn as nd


def settings(quick):
    if quick:
        return dict(n=4, d=3, T=1.0, saves=21, depths={1: [16, 32, 64]}, seeds=2, n_boot=200)
    return dict(n=8, d=4, T=10.0, saves=201, depths={1: [64, 128, 256, 512, 1024, 2048, 4096], 2: [64, 128, 256, 512, 1024]}, seeds=8,
                n_boot=2000)


def run(out: Path, quick: bool, *, executor=None):
    cfg = settings(quick)
    data = nd.sphere_data(n=cfg["n"], d=cfg["d"], key=jax.random.key(0))
    ts = np.linspace(0.0, cfg["T"], cfg["saves"])

    def drift(member):
        """One member: the flow with K2 saved, its drift rate, and the exact rate at t = 0."""
        sol = nd.solve(member, nd.Tsit5(), saveat=ts, rtol=1e-10, atol=1e-10, save_ntk=True)
        rate = np.gradient(np.asarray(sol.ntk), ts, axis=0, edge_order=2)
        exact0 = -np.asarray(nd.hierarchy_contraction(member.network, data.X, [sol.f[0] - data.y])) / cfg["n"]
        return {"sup_rate": np.abs(rate).max(), "rate_t0": np.abs(exact0).max(),
                "fd_check_t0": np.abs(rate[0] - exact0).max() / np.abs(exact0).max()}

    results = []
    for depth, widths in cfg["depths"].items():
        # A resumable sweep per depth (their widths differ), stored under ntk_drift_H*.store/.
        problem = nd.GradientFlowProblem(nd.MLP(cfg["d"], widths[0], depth, "tanh", key=0), data, (0.0, cfg["T"]))
        ensemble = nd.EnsembleProblem(problem, seeds=range(cfg["seeds"]), widths=widths, master_seed=24,
                                      output=drift, vmap=False)
        store = out / f"ntk_drift{'_quick' if quick else ''}_H{depth}.store"
        ds = nd.solve(ensemble, store=store, executor=executor, progress=not quick)
        results.append(ds[["sup_rate", "rate_t0", "fd_check_t0", "retcode"]].expand_dims(depth=[depth]))
        for width in ds.width.values:
            mean = float(ds.sup_rate.sel(width=width).mean())
            print(f"  H={depth} m={width:5d}: sup_t max|dK2/dt| = {mean:.3g} (seed mean), m * that = "
                  f"{width * mean:.3g}; finite differences vs -1/n K3[r] at t=0: "
                  f"{float(ds.fd_check_t0.sel(width=width).max()):.1e} relative", flush=True)
    ds = xr.concat(results, dim="depth", join="outer", combine_attrs="drop")
    if int((ds.retcode.fillna(0) != 0).sum()):
        print("  WARNING: some members failed and are left out")
    for name in ("sup_rate", "rate_t0", "fd_check_t0"):
        ds[name] = ds[name].where(ds.retcode == 0)
    ds["sup_rate"].attrs.update(long_name="sup over t in [0, T] of max_ab |d/dt K2(t)|", units="1")
    ds["rate_t0"].attrs.update(long_name="max_ab |d/dt K2| at t = 0, exact: -1/n K3[r] (eq. 10)", units="1")
    ds["fd_check_t0"].attrs.update(long_name="relative difference of finite-difference and exact d/dt K2 at t = 0", units="1")
    ds.attrs.update(nd.provenance("NTK drift rate vs width (Corollary 2.4)", {**cfg, "activation": "tanh", "master_seed": 24, "depths": {str(k): v for k, v in cfg["depths"].items()}}))
    fit = nd.fit_power_law(ds.sup_rate, dim="width", interval="bootstrap", sample_dim="seed",
                          n_boot=cfg["n_boot"])
    table = nd.compare_exponents(fit, -1.0, tolerance=0.15).reset_index()
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for var in ("exponent", "exponent_low", "exponent_high"):
        ds[f"sup_rate_{var}"] = fit[var]
    ds.attrs["exponent_table"] = table.to_csv(index=False)
    nc = nd.write_netcdf(ds, out / "ntk_drift.nc")
    png = plot(ds, out / "ntk_drift.png", cfg)
    print(f"  wrote {nc} and {png}")
    return ds


def plot(ds, path, cfg):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
    for depth in ds.depth.values:
        da = ds.sup_rate.sel(depth=depth).dropna("width", how="all")
        k, lo, hi = (float(ds[f"sup_rate_{v}"].sel(depth=depth)) for v in ("exponent", "exponent_low", "exponent_high"))
        line, = ax.loglog(da.width, da.mean("seed"), "o-", label=f"H = {depth}: slope {k:.2f} [{lo:.2f}, {hi:.2f}]")
        ax.loglog(np.repeat(da.width.values[:, None], da.sizes["seed"], 1), da.transpose("width", "seed"), ".",
                  color=line.get_color(), alpha=0.3)
    w = ds.width.values
    ax.loglog(w, float(ds.sup_rate.isel(depth=0, width=0).mean()) * w[0] / w, "k--", label="slope -1 (Cor. 2.4)")
    ax.set(xlabel="width m", ylabel=r"$\sup_{t\leq T}\ \max_{ab} |dK_2/dt|$",
           title=f"NTK drift rate, tanh, n = {cfg['n']}, T = {cfg['T']:g}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    nd.run_case(run, __doc__)
