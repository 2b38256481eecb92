"""Scales of the NTH kernels at initialization (Huang & Yau eq. (11)-(12)): K3 ~ 1/m, m K4 -> a deterministic limit.

At t = 0, K(r) = frak K(r) / m^(r/2-1) + O(m^-(r-1)/2) with frak K(r) = 0 for odd r (eq. 11). So

    max |K2| ~ m^0,   max |K3| ~ m^-1 (odd: the leading order vanishes),   max |K4| ~ m^-1,

and m K4 converges to the deterministic frak K(4): the norm of the seed mean of K4 falls like 1/m and
the seed-to-seed spread of m K4 shrinks like m^-1/2. (max |K4| approaches its 1/m law from above:
its relative correction is O(m^-1/2), visible at the small widths.)
For each depth H, width m and seed, K2, K3 and K4 of a tanh MLP (eq. 1-2) are computed exactly
(nthdyn.hierarchy_kernel) on n = 5 points of the sphere in R^4. Exponents are fitted on the seed
mean (bootstrap-over-seeds 95% interval).

Writes kernel_scales.nc and kernel_scales.png.
"""

from pathlib import Path

import jax
import numpy as np
import xarray as xr

import nthdyn as nd

THEORY = {"max_abs_K2": 0.0, "max_abs_K3": -1.0, "norm_mean_K4": -1.0, "max_abs_K4": -1.0, "spread_mK4": -0.5}


def settings(quick):
    if quick:
        return dict(n=4, d=3, depths={1: [32, 64, 128]}, seeds=3, n_boot=200)
    return dict(n=5, d=4, depths={1: [64, 128, 256, 512, 1024, 2048, 4096], 2: [64, 128, 256, 512, 1024]}, seeds=16,
                n_boot=2000)


def run(out: Path, quick: bool):
    cfg = settings(quick)
    data = nd.sphere_data(n=cfg["n"], d=cfg["d"], key=jax.random.key(0))
    master = jax.random.key(11)
    records = []
    for depth, widths in cfg["depths"].items():
        for width in widths:
            mK4 = []
            row = {name: [] for name in ("max_abs_K2", "max_abs_K3", "max_abs_K4")}
            for seed in range(cfg["seeds"]):
                net = nd.MLP(cfg["d"], width, depth, "tanh", key=jax.random.fold_in(master, seed))
                for r in (2, 3, 4):
                    K = np.asarray(nd.hierarchy_kernel(net, data.X, r))
                    row[f"max_abs_K{r}"].append(np.abs(K).max())
                mK4.append(width * K)
            mK4 = np.stack(mK4)
            spread = np.sqrt((mK4.std(axis=0, ddof=1) ** 2).mean())  # RMS over entries of the seed std
            records.append(xr.Dataset(
                {name: ("seed", values) for name, values in row.items()}
                | {"spread_mK4": ((), spread), "norm_mean_K4": ((), np.linalg.norm(mK4.mean(0)) / width)},
                coords={"seed": np.arange(cfg["seeds"])}).expand_dims(depth=[depth], width=[width]))
            print(f"  H={depth} m={width:5d}: max|K2| {np.mean(row['max_abs_K2']):.3g}  max|K3| {np.mean(row['max_abs_K3']):.3g}  "
                  f"max|K4| {np.mean(row['max_abs_K4']):.3g}  ||mean m K4|| {np.linalg.norm(mK4.mean(0)):.3g}  "
                  f"spread of m K4 {spread:.3g}", flush=True)
    ds = xr.combine_by_coords(records, combine_attrs="drop", join="outer")
    units = {"long_name": "", "units": "1"}
    for name, text in (("max_abs_K2", "max |K2| at t = 0"), ("max_abs_K3", "max |K3| at t = 0"),
                       ("max_abs_K4", "max |K4| at t = 0"),
                       ("spread_mK4", "RMS over entries of the seed std of m K4 at t = 0"),
                       ("norm_mean_K4", "Frobenius norm of the seed mean of K4 (frak K4 / m, eq. 11)")):
        ds[name].attrs.update(units | {"long_name": text})
    ds.attrs.update(nd.provenance("NTH kernel scales at initialization (eq. 11-12)", {**cfg, "activation": "tanh", "master_seed": 11}))

    import pandas as pd

    rows = []
    for name, theory in THEORY.items():
        if "seed" in ds[name].dims:
            fit = nd.fit_power_law(ds[name], dim="width", interval="bootstrap", sample_dim="seed",
                                   n_boot=cfg["n_boot"])
        else:
            fit = nd.fit_power_law(ds[name], dim="width")
        table = nd.compare_exponents(fit, theory, tolerance=0.15).reset_index()
        table.insert(0, "quantity", name)
        rows.append(table)
        ds[f"{name}_exponent"] = fit["exponent"]
        ds[f"{name}_exponent_low"] = fit["exponent_low"]
        ds[f"{name}_exponent_high"] = fit["exponent_high"]
    summary = pd.concat(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ds.attrs["exponent_table"] = summary.to_csv(index=False)
    nc = nd.write_netcdf(ds, out / "kernel_scales.nc")
    png = plot(ds, out / "kernel_scales.png")
    print(f"  wrote {nc} and {png}")
    return ds


def plot(ds, path):
    import matplotlib.pyplot as plt

    names = list(THEORY)
    fig, axes = plt.subplots(1, len(names), figsize=(3.9 * len(names), 4), constrained_layout=True)
    for ax, name in zip(axes, names):
        for depth in ds.depth.values:
            da = ds[name].sel(depth=depth).dropna("width", how="all")
            y = da.mean("seed") if "seed" in da.dims else da
            k = float(ds[f"{name}_exponent"].sel(depth=depth))
            ax.loglog(da.width, y, "o-", label=f"H = {depth}: slope {k:.2f}")
        ax.set(xlabel="width m", title=f"{name} (theory slope {THEORY[name]:g})")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("NTH kernels at initialization, tanh, seed means (eq. 11)")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    nd.run_case(run, __doc__)
