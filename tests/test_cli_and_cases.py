"""Every case runs end to end with --quick; the `nthdyn` command runs, summarises
and reports unknown cases."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from nthdyn._cli import main

ROOT = Path(__file__).resolve().parents[1]
CASES = sorted(p for p in (ROOT / "cases").glob("*.py") if p.name != "__init__.py")


@pytest.fixture(scope="session")
def subprocess_env():
    """Environment for child processes: CPU only, a non-interactive matplotlib."""
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    return env


def _run(args, env, cwd):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                            env=env, cwd=cwd, timeout=600)
    assert result.returncode == 0, (
        f"{args} exited with {result.returncode}\n--- stdout\n{result.stdout[-3000:]}"
        f"\n--- stderr\n{result.stderr[-5000:]}")
    return result


def test_cases_are_found():
    assert "quickstart" in [p.stem for p in CASES]


def _check_quick_run(name, result, work):
    """The case `name` ran in `work` and wrote CF NetCDF and a PNG to `work/out` only."""
    out = work / "out"
    assert f"[nthdyn] case {name} (quick)" in result.stdout
    assert list(out.glob("*.nc")), f"{name} wrote no .nc file"
    assert list(out.glob("*.png")), f"{name} wrote no .png file"
    for nc in out.glob("*.nc"):
        with xr.open_dataset(nc, engine="netcdf4") as ds:
            assert ds.attrs["Conventions"].startswith("CF-"), nc.name
            assert "title" in ds.attrs and "config" in ds.attrs, nc.name
    # nothing was written next to the case or in the working folder
    assert sorted(p.name for p in work.iterdir()) == ["out"]


# quickstart runs in `quickstart_out`, through `nthdyn run` (its default case), checked alike
@pytest.mark.parametrize("case", [c for c in CASES if c.stem != "quickstart"],
                         ids=[c.stem for c in CASES if c.stem != "quickstart"])
def test_case_runs_quick(case, tmp_path, subprocess_env):
    result = _run([case, "--quick", "--out", tmp_path / "out"], subprocess_env, cwd=tmp_path)
    _check_quick_run(case.stem, result, tmp_path)


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory, subprocess_env):
    """`nthdyn run --quick --out OUT` (the default, shipped quickstart case): OUT and
    what it printed."""
    work = tmp_path_factory.mktemp("cli")
    result = _run(["-m", "nthdyn._cli", "run", "--quick", "--out", work / "out"],
                  subprocess_env, cwd=work)
    _check_quick_run("quickstart", result, work)
    return work / "out", result.stdout


@pytest.fixture(scope="module")
def quickstart_out(quickstart_run):
    return quickstart_run[0]


def test_the_quickstart_page_shows_what_the_quick_run_prints(quickstart_run):
    """docs/quickstart.md's output block is the quick run's, line for line, but for the
    seconds it took and the output folder."""
    out, printed = quickstart_run
    page = (ROOT / "docs" / "quickstart.md").read_text()
    block = page.split("[nthdyn] case quickstart (quick)", 1)[1].split("```", 1)[0]
    shown = ("[nthdyn] case quickstart (quick)" + block).strip().splitlines()
    ran = printed.replace(str(out), "out").strip().splitlines()
    assert len(shown) == len(ran), (shown, ran)
    for line_shown, line_ran in zip(shown, ran):
        if "finished in" in line_shown:
            line_shown, line_ran = (line.split(" in ")[0] for line in (line_shown, line_ran))
        assert line_shown == line_ran


def test_cli_run_writes_quickstart_files(quickstart_out):
    assert (quickstart_out / "quickstart.nc").is_file()
    png = quickstart_out / "quickstart.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quickstart_ntk_relative_change(quickstart_out):
    with xr.open_dataset(quickstart_out / "quickstart.nc", engine="netcdf4") as ds:
        change = ds["ntk_relative_change"].load()
        ntk = ds["ntk"].load()
    assert change.dims == ("time",)
    assert change.values[0] == 0.0
    assert np.all(change.values >= 0) and change.values[-1] > 0
    assert change.attrs["units"] == "1" and "relative change" in change.attrs["long_name"]
    expected = (np.linalg.norm(ntk - ntk.isel(time=0), axis=(1, 2))
                / np.linalg.norm(ntk.isel(time=0)))
    np.testing.assert_allclose(change.values, expected, rtol=1e-12, atol=0)


def test_cli_info(quickstart_out, capsys):
    path = quickstart_out / "quickstart.nc"
    with xr.open_dataset(path, engine="netcdf4") as ds:
        title, variables = ds.attrs["title"], list(ds.data_vars)
    main(["info", str(path)])
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == f"{path}: {title}"
    assert "quickstart" in title
    for name in variables:
        assert f"    {name}(" in printed, name
    assert "ntk_relative_change" in variables
    assert "status: {'successful': 1}" in printed
    assert "WARNING" not in printed  # computed in float64


def test_cli_info_missing_or_broken_file(tmp_path, capsys):
    broken = tmp_path / "broken.nc"
    broken.write_bytes(b"CDF\x01 not really")
    for path, reason in ((tmp_path / "missing.nc", "no such results file"),
                         (broken, "not a readable NetCDF file")):
        with pytest.raises(SystemExit) as exit_:
            main(["info", str(path)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "nthdyn info: " in err and reason in err
        assert err.count("\n") == 1  # one line, no traceback


def test_cli_unknown_case_lists_shipped_cases(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"no case named 'nonexistent'; shipped cases: "
                                         r"\[.*'quickstart'.*\]") as failure:
        main(["run", "nonexistent"])
    for case in CASES:
        assert f"'{case.stem}'" in str(failure.value)


def test_cli_missing_case_file(tmp_path):
    with pytest.raises(SystemExit, match=r"case file '.*missing\.py' not found"):
        main(["run", str(tmp_path / "missing.py")])


def test_cli_runs_a_case_file_by_path(tmp_path, capsys):
    case = tmp_path / "tiny_case.py"
    case.write_text('"""A tiny case: writes its arguments."""\n'
                    "def run(out, quick):\n"
                    "    (out / 'ran.txt').write_text(f'quick={quick}')\n")
    main(["run", str(case), "--quick", "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "ran.txt").read_text() == "quick=True"
    assert "[nthdyn] case tiny_case (quick): A tiny case: writes its arguments." in (
        capsys.readouterr().out)


def test_cli_case_file_without_run(tmp_path):
    case = tmp_path / "no_run.py"
    case.write_text("x = 1\n")
    with pytest.raises(SystemExit, match=r"no_run\.py defines no run\(out, quick\) function"):
        main(["run", str(case), "--out", str(tmp_path / "out")])
