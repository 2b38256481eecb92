"""Mean-field training of two-layer students on a 4-neuron sigmoid teacher (paper 002, Fig. 6).

Teacher F4(x) = (1/4) sum_{i=1..4} sigmoid(theta_i . x) (u_i = 1, alpha = 1, theta_i ~ N(0, I) in
d = 2, drawn once), inputs x ~ N(0, 100^2 I) (large inputs make every neuron a sharp half-plane, which
makes the reconstruction hard), labels F4(x) + N(0, 0.1^2). Students TwoLayer(2, m, alpha=1,
"sigmoid") for m = 4 ... 1024 are trained by the mean-field gradient flow d(u_j, theta_j)/dt =
-m grad phi (paper 002 eq. (20)) with weight decay lambda = 1e-3 on u and theta (eq. (2)), and by
the noisy (Langevin) flow with temperature tau (Euler-Maruyama, dt = 0.02, the entropy-regularized
mean field of Section V).

Measured per width: final training loss, test MSE against the clean teacher on 2000 fresh inputs,
the wasted-neuron fraction (|u_j| < 0.1: under a tenth of one teacher neuron's u_i = 1) at the end and
for the time average of u_j over the last quarter of training, and the fraction of neurons more than
10 degrees from every teacher line (with their share of sum_j |u_j|), see measures(); for m = 4
over several seeds, how many stall at a higher loss (a local minimum). The particle cloud theta_j at
t = 0 and at the end, with the teacher's theta_i marked, and the histogram of u are plotted.

Writes mean_field_teacher.nc and mean_field_teacher.png.
"""

import time
from pathlib import Path

import equinox as eqx
import numpy as np
import xarray as xr

import nthdyn as nd

THRESHOLD = 0.1   # |u_j| below this: a wasted neuron
FAR = 10.0        # degrees: theta_j this far from every teacher line is off the teacher


def settings(quick):
    if quick:
        return dict(n=30, n_test=100, T=5.0, saves=3, widths=[4], noisy_widths=[4],
                    stall_seeds=2, tau=1e-3, dt=0.05, decay=1e-3)
    return dict(n=200, n_test=2000, T=200.0, saves=41, widths=[4, 16, 64, 256, 1024],
                noisy_widths=[64, 1024], stall_seeds=6, tau=1e-3, dt=0.02, decay=1e-3)


def teacher_and_data(cfg):
    """The teacher of paper 002 Fig. 6 and its data (`nd.sigmoid_teacher_data`, key 2020)."""
    return nd.sigmoid_teacher_data(cfg["n"], cfg["n_test"], key=2020)


def train(cfg, data, X_test, teacher, width, seed, tau):
    net = nd.TwoLayer(2, width, alpha=1.0, activation="sigmoid", key=nd.member_key(seed, 6))
    problem = nd.GradientFlowProblem(net, data, (0.0, cfg["T"]), test=X_test,
                                     time_scale="mean_field", weight_decay=cfg["decay"],
                                     temperature=tau)
    ts = np.linspace(0.0, cfg["T"], cfg["saves"])
    if tau:
        sol = nd.solve(problem, nd.Euler(), dt0=cfg["dt"], saveat=ts, save_regime=True,
                       throw=False)
    else:
        sol = nd.solve(problem, saveat=ts, rtol=1e-6, atol=1e-6, max_steps=1_000_000,
                       save_regime=True, throw=False)
    clean = eqx.filter_jit(lambda net, x: net(x))(teacher, X_test)
    test_mse = np.mean((np.asarray(sol.f_test) - np.asarray(clean)[None]) ** 2, axis=1)
    return sol, test_mse


def measures(u, theta, teacher_theta):
    """Three measures of wasted neurons at the end of training (paper 002 Fig. 6(d)-(h)), from
    the saved particles u (time, neuron), theta (time, neuron, 2):

    - `wasted_end`: the fraction with |u_j(T)| < THRESHOLD;
    - `wasted_avg`: the fraction with |mean of u_j over the last quarter of the saves| <
      THRESHOLD (the noise makes every u_j jitter, which by itself puts some near 0 at any one
      time; a neuron that carries output keeps its average);
    - `far`, `far_share`: the fraction of neurons whose direction theta_j/|theta_j| is more than
      FAR degrees from every teacher line (theta_i or -theta_i: with |x| ~ 100 a sigmoid neuron is
      a sharp half-plane, and sigmoid(-z) = 1 - sigmoid(z)), and their share of sum_j |u_j|."""
    u, theta = np.asarray(u), np.asarray(theta)
    last = u[-max(1, len(u) // 4):]
    lines = np.asarray(teacher_theta) / np.linalg.norm(teacher_theta, axis=1, keepdims=True)
    cos = np.abs(theta[-1] / np.linalg.norm(theta[-1], axis=1, keepdims=True) @ lines.T).max(1)
    far = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))) > FAR
    return {"wasted_end": float(np.mean(np.abs(u[-1]) < THRESHOLD)),
            "wasted_avg": float(np.mean(np.abs(last.mean(0)) < THRESHOLD)),
            "far": float(np.mean(far)),
            "far_share": float(np.abs(u[-1])[far].sum() / np.abs(u[-1]).sum())}


def run(out: Path, quick: bool):
    start = time.perf_counter()
    cfg = settings(quick)
    teacher, data, X_test = teacher_and_data(cfg)
    ts = np.linspace(0.0, cfg["T"], cfg["saves"])
    runs = {}
    for tau in (0.0, cfg["tau"]):
        for width in (cfg["widths"] if tau == 0 else cfg["noisy_widths"]):
            sol, test_mse = train(cfg, data, X_test, teacher, width, 0, tau)
            runs[tau, width] = (sol, test_mse)
            u = np.asarray(sol.observables["particle_u"])
            w = measures(u, sol.observables["particle_theta"], teacher.theta)
            print(f"  tau={tau:g} m={width:5d}: loss {float(sol.loss[-1]):.5f}, test MSE "
                  f"{test_mse[-1]:.5f}, wasted {w['wasted_end']:.3f} (init "
                  f"{nd.wasted_fraction(u[0], THRESHOLD):.3f}; time-averaged u {w['wasted_avg']:.3f}), "
                  f"off the teacher lines {w['far']:.3f} (share of |u| {w['far_share']:.3f}), "
                  f"{sol.status} [{time.perf_counter() - start:.0f} s]", flush=True)
    stalls = []
    for seed in range(cfg["stall_seeds"]):
        sol, test_mse = train(cfg, data, X_test, teacher, 4, seed, 0.0)
        stalls.append((float(sol.loss[-1]), test_mse[-1]))
    stall_loss = np.array([s[0] for s in stalls])
    floor = float(min(runs[0.0, m][0].loss[-1] for m in cfg["widths"]))
    print(f"  m=4 over {cfg['stall_seeds']} seeds: final losses {np.round(stall_loss, 5)}; "
          f"{int(np.sum(stall_loss > 1.5 * floor))} stall above 1.5 x the widest loss {floor:.5f}")

    ds = xr.Dataset()
    ds = ds.assign_coords(
        time=("time", ts, {"long_name": "training time t (mean-field scale)", "units": "1"}),
        width=("width", cfg["widths"], {"long_name": "student width m", "units": "1"}),
        noisy_width=("noisy_width", cfg["noisy_widths"],
                     {"long_name": "student width m of the noisy runs", "units": "1"}),
        stall_seed=("stall_seed", np.arange(cfg["stall_seeds"]),
                    {"long_name": "seed of the m = 4 students", "units": "1"}),
        teacher_neuron=("teacher_neuron", np.arange(4), {"long_name": "teacher neuron", "units": "1"}),
        input_dim=("input_dim", [0, 1], {"long_name": "input coordinate", "units": "1"}))
    clean = [runs[0.0, m] for m in cfg["widths"]]
    noisy = [runs[cfg["tau"], m] for m in cfg["noisy_widths"]]
    ds["loss"] = (("width", "time"), np.stack([np.asarray(s.loss) for s, _ in clean]),
                  {"long_name": "training loss L (noiseless mean-field flow)", "units": "1"})
    ds["test_mse"] = (("width", "time"), np.stack([m for _, m in clean]),
                      {"long_name": "test MSE against the clean teacher", "units": "1"})
    ds["wasted_fraction"] = (("width", "time"), np.stack(
        [nd.wasted_fraction(np.asarray(s.observables["particle_u"]), THRESHOLD) for s, _ in clean]),
        {"long_name": f"fraction of neurons with |u_j| < {THRESHOLD}", "units": "1",
         "equation": "paper 002 Fig. 6(d)"})
    ds["loss_noisy"] = (("noisy_width", "time"), np.stack([np.asarray(s.loss) for s, _ in noisy]),
                        {"long_name": f"training loss of the noisy flow (tau = {cfg['tau']:g})", "units": "1"})
    ds["test_mse_noisy"] = (("noisy_width", "time"), np.stack([m for _, m in noisy]),
                            {"long_name": "test MSE of the noisy flow", "units": "1"})
    ds["wasted_fraction_noisy"] = (("noisy_width", "time"), np.stack(
        [nd.wasted_fraction(np.asarray(s.observables["particle_u"]), THRESHOLD) for s, _ in noisy]),
        {"long_name": f"fraction of neurons with |u_j| < {THRESHOLD}, noisy flow", "units": "1",
         "equation": "paper 002 Fig. 6(g)"})
    descriptions = {  # variable: (key of measures(), long name)
        "wasted_fraction_averaged": ("wasted_avg", "fraction of neurons with |time average of u_j "
                                     f"over the last quarter| < {THRESHOLD}"),
        "off_teacher_fraction": ("far", f"fraction of neurons with theta_j more than {FAR:g} degrees "
                                 "from every teacher line"),
        "off_teacher_share": ("far_share", f"share of sum_j |u_j| carried by neurons more than "
                              f"{FAR:g} degrees from every teacher line")}
    for name, (key, description) in descriptions.items():
        for suffix, dim, sols in (("", "width", clean), ("_noisy", "noisy_width", noisy)):
            values = [measures(s.observables["particle_u"], s.observables["particle_theta"],
                               teacher.theta)[key] for s, _ in sols]
            ds[f"{name}{suffix}"] = ((dim,), values, {
                "long_name": description + (", noisy flow" if suffix else ""), "units": "1",
                "equation": "paper 002 Fig. 6(d)-(h); cases/mean_field_teacher.py measures()"})
    ds["stall_loss"] = (("stall_seed",), stall_loss,
                        {"long_name": "final training loss of m = 4 students", "units": "1"})
    big = max(cfg["noisy_widths"])
    for name, sol in (("clean", runs[0.0, big][0]), ("noisy", runs[cfg["tau"], big][0])):
        obs = sol.observables
        ds[f"particle_u_{name}"] = (("time", f"neuron_{name}"), np.asarray(obs["particle_u"]),
                                    {"long_name": f"u_j, m = {big}, {name} flow", "units": "1"})
        ds[f"particle_theta_{name}"] = (("time", f"neuron_{name}", "input_dim"),
                                        np.asarray(obs["particle_theta"]),
                                        {"long_name": f"theta_j, m = {big}, {name} flow", "units": "1"})
    ds["teacher_theta"] = (("teacher_neuron", "input_dim"), np.asarray(teacher.theta),
                           {"long_name": "teacher weights theta_i (u_i = 1)", "units": "1"})
    ds.attrs.update(nd.provenance("Mean-field students of a 4-neuron sigmoid teacher (paper 002 Fig. 6)",
                                  {**cfg, "threshold": THRESHOLD, "far_degrees": FAR}))
    nc = nd.write_netcdf(ds, out / "mean_field_teacher.nc")
    png = plot(ds, out / "mean_field_teacher.png", cfg)
    print(f"  wrote {nc} and {png} in {time.perf_counter() - start:.0f} s")
    return ds


def plot(ds, path, cfg):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 9), constrained_layout=True)
    ax = axes[0, 0]
    for width in ds.width.values:
        ax.semilogy(ds.time, ds.loss.sel(width=width), label=f"m = {width}")
    ax.axhline(0.005, color="k", ls=":", label="label noise / 2")
    ax.set(xlabel="t", ylabel="training loss", title="(a) loss, noiseless mean-field flow")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    ax.loglog(ds.width, ds.test_mse.isel(time=-1), "o-", label="noiseless")
    ax.loglog(ds.noisy_width, ds.test_mse_noisy.isel(time=-1), "s", label=f"tau = {cfg['tau']:g}")
    ax.set(xlabel="width m", ylabel="test MSE vs clean teacher", title="(b) final test MSE")
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    for name in ("clean", "noisy"):
        ax.hist(ds[f"particle_u_{name}"].isel(time=-1), bins=40, alpha=0.5, density=True,
                label=f"{name}: wasted {float((np.abs(ds[f'particle_u_{name}'].isel(time=-1)) < THRESHOLD).mean()):.3f}")
    ax.set(xlabel="u_j", title=f"(c) histogram of u, m = {max(ds.noisy_width.values)}")
    ax.legend(fontsize=7)
    for ax, (name, t, title) in zip(axes[1], (("clean", 0, "(d) theta_j at t = 0"),
                                              ("clean", -1, "(e) theta_j at the end"),
                                              ("noisy", -1, "(f) theta_j at the end, noisy"))):
        theta = ds[f"particle_theta_{name}"].isel(time=t)
        u = ds[f"particle_u_{name}"].isel(time=t)
        sc = ax.scatter(theta.isel(input_dim=0), theta.isel(input_dim=1), c=np.abs(u), s=4,
                        cmap="viridis")
        ax.scatter(ds.teacher_theta.isel(input_dim=0), ds.teacher_theta.isel(input_dim=1),
                   c="red", s=40, marker="x", label="teacher theta_i")
        ax.set(xlabel="theta_1", ylabel="theta_2", title=title, aspect="equal")
        fig.colorbar(sc, ax=ax, label="|u_j|")
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


if __name__ == "__main__":
    nd.run_case(run, __doc__)
