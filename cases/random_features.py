"""Random features (paper 002, Section III) and random vs discriminative features (Table II).

1. RF training is kernel regression. A TwoLayer with train="readout" (theta frozen at its random
   draw, only u trained) is linear in u, so its gradient flow is kernel regression with the finite
   RF kernel K_m(x, x') = (alpha/m)^2 sum_j h(theta_j . x) h(theta_j . x'), in closed form. The flow
   (Dopri8, rtol = atol = 1e-13; Tsit5 with --quick) is compared with nthdyn.KernelRegressionProblem with that kernel
   (eigendecomposition), on training and test inputs.
2. K_m approaches the infinite-width RF kernel. At alpha = sqrt(m), K_m = (1/m) sum_j h h' is a mean
   of m independent terms with mean K_inf = E[h(theta.x) h(theta.x')] (limiting_kernels of the
   readout-only network), so ||K_m - K_inf||_F falls like m^(-1/2) (central limit theorem): the
   exponent is fitted over widths with a bootstrap-over-seeds interval.
3. Random vs discriminative features on the teacher of the mean-field case (4 sigmoid neurons in
   d = 2, x ~ N(0, 100^2 I), label noise 0.1): at one width m, the test MSE against the clean teacher
   of RF (kernel regression with K_m of the readout), NTK (kernel regression with the full finite
   NTK at initialization: the lazy, linearized network), and MF (the mean-field flow of
   TwoLayer(alpha = 1), which learns its features).

Writes random_features.nc and random_features.png.
"""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

import nthdyn as nd


def settings(quick):
    if quick:
        return dict(n=30, n_test=100, widths=[8, 16, 32], seeds=4, m=16, T_mf=5.0,
                    T_kernel=[1e2, 1e4], T_rf=20.0, solver=nd.Tsit5(), n_boot=200)
    return dict(n=200, n_test=2000, widths=[16, 64, 256, 1024, 4096], seeds=20, m=256, T_mf=200.0,
                T_kernel=[1e1, 1e2, 1e3, 1e4, 1e5, 1e6], T_rf=200.0, solver=nd.Dopri8(),
                n_boot=2000)


def teacher_and_data(cfg):
    """The teacher of paper 002 Fig. 6 and its data (`nd.sigmoid_teacher_data`, key 2020)."""
    return nd.sigmoid_teacher_data(cfg["n"], cfg["n_test"], key=2020)


def rf_equals_kernel_regression(cfg, data, X_test):
    alpha, m = 1.0, cfg["m"]
    net = nd.TwoLayer(2, m, alpha=alpha, activation="sigmoid", train="readout", key=1)

    def rf_kernel(A, B):  # (alpha/m)^2 sum_j h(theta_j . x) h(theta_j . x')
        return (alpha / m) ** 2 * jax.nn.sigmoid(A @ net.theta.T) @ jax.nn.sigmoid(B @ net.theta.T).T

    ts = np.linspace(0.0, cfg["T_rf"], 11)
    flow = nd.solve(nd.GradientFlowProblem(net, data, (0.0, cfg["T_rf"]), test=X_test), cfg["solver"],
                    saveat=ts, rtol=1e-13, atol=1e-13, max_steps=10**6)
    krr = nd.solve(nd.KernelRegressionProblem(rf_kernel, data, (0.0, cfg["T_rf"]), X_test,
                                              f0=net(data.X), f0_test=net(X_test)), saveat=ts)
    return (float(jnp.max(jnp.abs(flow.f - krr.f))), float(jnp.max(jnp.abs(flow.f_test - krr.f_test))),
            float(jnp.max(jnp.abs(nd.ntk(net, data.X) - rf_kernel(data.X, data.X)))))


def kernel_error(cfg):
    """||K_m - K_inf||_F of the RF kernel at alpha = sqrt(m), erf features, 8 points of the sphere."""
    X = nd.sphere_data(n=8, d=3, key=5).X
    limit = None
    errors = np.empty((len(cfg["widths"]), cfg["seeds"]))
    for i, m in enumerate(cfg["widths"]):
        for s in range(cfg["seeds"]):
            net = nd.TwoLayer(3, m, alpha=float(np.sqrt(m)), activation="erf", train="readout",
                              key=nd.member_key(s, 3))
            if limit is None:
                limit = nd.limiting_kernels(net, X).ntk
            errors[i, s] = np.linalg.norm(np.asarray(nd.ntk(net, X)) - limit)
    return errors


def compare_features(cfg, teacher, data, X_test):
    """Test MSE vs the clean teacher: RF and NTK kernel regression (at several times), MF flow."""
    m = cfg["m"]
    clean = np.asarray(teacher(X_test))
    net = nd.TwoLayer(2, m, alpha=float(np.sqrt(m)), activation="sigmoid", key=4)
    readout = nd.TwoLayer.from_weights(net.theta, net.u, alpha=net.alpha, activation="sigmoid",
                                       train="readout")
    out = {}
    for name, kernel_net in (("RF", readout), ("NTK", net)):
        sol = nd.solve(nd.KernelRegressionProblem(nd.FiniteNTK(kernel_net), data,
                                                  (0.0, max(cfg["T_kernel"])), X_test),
                       saveat=cfg["T_kernel"])
        out[name] = np.mean((np.asarray(sol.f_test) - clean) ** 2, axis=1)
        out[name + "_train"] = np.asarray(sol.loss)
    mf = nd.TwoLayer(2, m, alpha=1.0, activation="sigmoid", key=4)
    sol = nd.solve(nd.GradientFlowProblem(mf, data, (0.0, cfg["T_mf"]), test=X_test,
                                          time_scale="mean_field", weight_decay=1e-3),
                   saveat=[cfg["T_mf"]], rtol=1e-6, atol=1e-6, max_steps=10**6)
    out["MF"] = float(np.mean((np.asarray(sol.f_test[-1]) - clean) ** 2))
    out["MF_train"] = float(sol.loss[-1])
    return out


def run(out: Path, quick: bool):
    start = time.perf_counter()
    cfg = settings(quick)
    teacher, data, X_test = teacher_and_data(cfg)
    err_f, err_test, err_kernel = rf_equals_kernel_regression(cfg, data, X_test)
    print(f"  RF flow vs kernel regression with the closed-form RF kernel (m = {cfg['m']}): max |f| "
          f"difference {err_f:.2e} (training), {err_test:.2e} (test); structured NTK vs closed form "
          f"{err_kernel:.1e} [{time.perf_counter() - start:.0f} s]", flush=True)
    errors = kernel_error(cfg)
    da = xr.DataArray(errors, dims=("width", "seed"),
                      coords={"width": ("width", cfg["widths"], {"long_name": "width m", "units": "1"}),
                              "seed": ("seed", np.arange(cfg["seeds"]), {"long_name": "seed", "units": "1"})})
    fit = nd.fit_power_law(da, dim="width", interval="bootstrap", sample_dim="seed",
                           n_boot=cfg["n_boot"])
    print("  ||K_m - K_inf||_F (seed mean): " + ", ".join(
        f"m={m}: {v:.3g}" for m, v in zip(cfg["widths"], errors.mean(1)))
        + f"; exponent {float(fit.exponent):.3f} [{float(fit.exponent_low):.3f}, "
          f"{float(fit.exponent_high):.3f}] (theory -0.5) [{time.perf_counter() - start:.0f} s]",
        flush=True)
    features = compare_features(cfg, teacher, data, X_test)
    for name in ("RF", "NTK"):
        print(f"  {name:3s} kernel regression, m = {cfg['m']}: test MSE " + ", ".join(
            f"t={t:g}: {v:.4f}" for t, v in zip(cfg["T_kernel"], features[name]))
            + f" (best {features[name].min():.4f})")
    print(f"  MF  flow (alpha = 1, mean-field time, weight decay 1e-3), m = {cfg['m']}: test MSE "
          f"{features['MF']:.4f}, training loss {features['MF_train']:.4f} "
          f"[{time.perf_counter() - start:.0f} s]")

    ds = xr.Dataset({"kernel_error": da.assign_attrs(
        long_name="||K_m - K_inf||_F of the RF kernel at alpha = sqrt(m)", units="1",
        equation="paper 002 Section III")})
    ds["kernel_error_exponent"] = fit.exponent.assign_attrs(long_name="fitted exponent", units="1")
    ds["kernel_error_exponent_low"] = fit.exponent_low.assign_attrs(long_name="95% low", units="1")
    ds["kernel_error_exponent_high"] = fit.exponent_high.assign_attrs(long_name="95% high", units="1")
    ds = ds.assign_coords(kernel_time=("kernel_time", cfg["T_kernel"],
                                       {"long_name": "kernel-regression time t", "units": "1"}))
    for name in ("RF", "NTK"):
        ds[f"test_mse_{name}"] = (("kernel_time",), features[name],
                                  {"long_name": f"test MSE of {name} kernel regression", "units": "1"})
        ds[f"loss_{name}"] = (("kernel_time",), features[name + "_train"],
                              {"long_name": f"training loss of {name} kernel regression", "units": "1"})
    ds["test_mse_MF"] = ((), features["MF"], {"long_name": "test MSE of the mean-field flow", "units": "1"})
    ds["loss_MF"] = ((), features["MF_train"], {"long_name": "training loss of the mean-field flow", "units": "1"})
    for name, value in (("rf_vs_kernel_regression", err_f), ("rf_vs_kernel_regression_test", err_test)):
        ds[name] = ((), value, {"long_name": f"max |f_flow - f_kernel_regression| ({name})", "units": "1"})
    ds.attrs.update(nd.provenance("Random features vs kernel regression; random vs discriminative "
                                  "features (paper 002 Section III, Table II)",
                                  {**cfg, "solver": type(cfg["solver"]).__name__}))
    nc = nd.write_netcdf(ds, out / "random_features.nc")
    png = plot(ds, out / "random_features.png", cfg)
    print(f"  wrote {nc} and {png} in {time.perf_counter() - start:.0f} s")
    return ds


def plot(ds, path, cfg):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), constrained_layout=True)
    ax = axes[0]
    w = ds.width.values
    ax.loglog(np.repeat(w[:, None], ds.sizes["seed"], 1), ds.kernel_error, ".", color="C0", alpha=0.3)
    ax.loglog(w, ds.kernel_error.mean("seed"), "o-",
              label=f"seed mean, slope {float(ds.kernel_error_exponent):.3f}")
    ax.loglog(w, float(ds.kernel_error.mean("seed")[0]) * np.sqrt(w[0] / w), "k:", label="m^-1/2")
    ax.set(xlabel="width m", ylabel="||K_m - K_inf||_F", title="RF kernel vs its infinite-width limit")
    ax.legend(fontsize=8)
    ax = axes[1]
    for name in ("RF", "NTK"):
        ax.semilogx(ds.kernel_time, ds[f"test_mse_{name}"], "o-", label=f"{name} (kernel regression)")
    ax.axhline(float(ds.test_mse_MF), color="C2", label="MF (features learned)")
    ax.set(xlabel="kernel-regression time t", ylabel="test MSE vs clean teacher",
           title=f"random vs discriminative features, m = {cfg['m']}")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    nd.run_case(run, __doc__)
