"""The `nthdyn` command: --version, cases, a case's --help, plot and info (in process)."""

import ast
import importlib.metadata
import re
from pathlib import Path

import jax
import matplotlib.image
import numpy as np
import pytest
import xarray as xr

import nthdyn as nd
from nthdyn._cli import main

ROOT = Path(__file__).resolve().parents[1]
CASES = sorted(p for p in (ROOT / "cases").glob("*.py") if p.name != "__init__.py")
SAVE = np.linspace(0.0, 0.5, 5)


def _headline(path):
    return ast.get_docstring(ast.parse(path.read_text())).strip().splitlines()[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"nthdyn {nd.__version__}\n"
    assert nd.__version__ == importlib.metadata.version("nthdyn")


def test_cases_lists_every_case_with_its_headline(capsys):
    main(["cases"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(CASES)
    for line, case in zip(lines, CASES):
        name, headline = line.split(None, 1)
        assert (name, headline) == (case.stem, _headline(case))


def test_run_case_help_shows_the_case(capsys):
    with pytest.raises(SystemExit) as done:
        main(["run", "quickstart", "--help"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: nthdyn run quickstart")
    assert _headline(ROOT / "cases" / "quickstart.py") in printed
    assert "Writes quickstart.nc and quickstart.png." in printed
    assert "--quick" in printed and "--out" in printed
    assert "--workers" not in printed  # quickstart's run() takes no executor
    assert "[nthdyn] case" not in printed  # nothing ran


def test_run_case_help_lists_distributed_options_of_ensemble_cases(capsys):
    with pytest.raises(SystemExit):
        main(["run", "ntk_drift", "-h"])
    printed = capsys.readouterr().out
    assert _headline(ROOT / "cases" / "ntk_drift.py") in printed
    assert "--workers N" in printed and "--scheduler ADDRESS" in printed


def test_run_help_without_case_is_generic(capsys):
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("usage: nthdyn run")
    for option in ("--out", "--quick", "--workers", "--scheduler", "CASE"):
        assert option in printed
    assert "Quickstart:" not in printed


def test_run_passes_options_through(tmp_path):
    case = tmp_path / "one_process.py"
    case.write_text('"""A case without executor."""\ndef run(out, quick):\n    pass\n')
    with pytest.raises(SystemExit, match="this case runs in one process"):
        main(["run", str(case), "--workers", "2", "--out", str(tmp_path / "out")])


# --- nthdyn plot ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A single solve, an ensemble and a comparison, written as nthdyn writes them."""
    folder = tmp_path_factory.mktemp("plot")
    data = nd.sphere_data(n=4, d=3, key=jax.random.key(2))
    net = nd.MLP(in_size=3, width=8, depth=1, activation="tanh", key=jax.random.key(3))
    problem = nd.GradientFlowProblem(net, data, tspan=(0.0, 0.5))
    flow = nd.solve(problem, saveat=SAVE, save_ntk=True)
    nth = nd.solve(nd.NTHProblem(net, data, 2, (0.0, 0.5)), saveat=SAVE)
    ensemble = nd.solve(nd.EnsembleProblem(problem, seeds=range(2), widths=[4, 8]),
                        nd.Tsit5(), saveat=SAVE)
    return {
        "solve": nd.write_netcdf(nd.to_dataset(flow), folder / "solve.nc"),
        "ensemble": nd.write_netcdf(ensemble, folder / "ensemble.nc"),
        "comparison": nd.write_netcdf(nd.compare(flow, nth), folder / "comparison.nc"),
    }


def _check_png(path):
    assert path.is_file() and path.stat().st_size > 5000
    image = matplotlib.image.imread(path)
    colours = np.unique(image[..., :3].reshape(-1, 3), axis=0)
    assert len(colours) > 10, "the figure is blank"


@pytest.mark.parametrize("kind", ["solve", "ensemble", "comparison"])
def test_plot_writes_a_png_next_to_the_file(files, kind, capsys):
    main(["plot", str(files[kind])])
    png = files[kind].with_suffix(".plot.png")
    assert capsys.readouterr().out == f"{png}\n"
    _check_png(png)


def test_plot_to_a_chosen_file_and_variable(files, tmp_path, capsys):
    out = tmp_path / "steps.png"
    main(["plot", str(files["ensemble"]), "--variable", "num_steps", "--out", str(out)])
    assert capsys.readouterr().out == f"{out}\n"
    _check_png(out)


def test_plot_ensemble_with_failed_and_missing_members(files, tmp_path):
    ds = nd.read_netcdf(files["ensemble"])
    ds["retcode"] = ds["retcode"].astype(float)
    ds["retcode"][1, 0] = 4  # member_error
    ds["retcode"][0, 1] = np.nan  # a point missing from a combined file
    ds["loss"][1, 0] = np.nan
    path = nd.write_netcdf(ds, tmp_path / "failed.nc")
    main(["plot", str(path)])
    _check_png(path.with_suffix(".plot.png"))


def test_plot_falls_back_to_a_float_variable(tmp_path):
    ds = xr.Dataset({"sigma": (("depth", "width"), [[1.0, 0.5, 0.25], [2.0, 1.0, np.nan]],
                               {"long_name": "fluctuation sigma(m)"})},
                    coords={"depth": [1, 2], "width": [64, 256, 1024]})
    path = nd.write_netcdf(ds, tmp_path / "scales.nc")
    main(["plot", str(path)])
    _check_png(path.with_suffix(".plot.png"))


def test_plot_nothing_to_plot(tmp_path, capsys):
    path = nd.write_netcdf(xr.Dataset({"label": ((), "text")}), tmp_path / "text.nc")
    with pytest.raises(SystemExit) as done:
        main(["plot", str(path)])
    assert done.value.code == 2
    assert capsys.readouterr().err == (f"nthdyn plot: nothing nthdyn can plot by default in "
                                       f"{path}; pass --variable NAME\n")
    with pytest.raises(SystemExit) as done:
        main(["plot", str(path), "--variable", "nope"])
    assert done.value.code == 2
    assert "has no variable 'nope'; it has: label" in capsys.readouterr().err


def test_plot_missing_file(tmp_path, capsys):
    path = tmp_path / "missing.nc"
    with pytest.raises(SystemExit) as done:
        main(["plot", str(path)])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nthdyn plot: ") and str(path) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not path.with_suffix(".plot.png").exists()


# --- nthdyn info ------------------------------------------------------------------------


def test_info_names_ensemble_failures(files, tmp_path, capsys):
    ds = nd.read_netcdf(files["ensemble"])
    ds["retcode"] = ds["retcode"].astype(float)
    ds["retcode"][1, 0] = 4
    ds["retcode"][0, 1] = np.nan
    ds["message"] = ds["message"].astype(object)
    ds["message"][1, 0] = "ValueError: width 4 refused"
    path = nd.write_netcdf(ds, tmp_path / "failed.nc")
    main(["info", str(path)])
    printed = capsys.readouterr().out
    assert "status: {'successful': 2, 'not computed': 1, 'member_error': 1}" in printed
    assert "seed=1, width=4: member_error: ValueError: width 4 refused" in printed
    assert "seed=0, width=8: not computed" in printed
    status = printed.split("status: ", 1)[1].splitlines()[0]
    assert not re.search(r"'[0-9.]+'", status)  # never a code as a name
