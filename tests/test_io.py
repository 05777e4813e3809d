"""xarray datasets and NetCDF files: lossless round trips, CF attributes, user files and their errors."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import diffphys as dp
from diffphys import assimilate as da
from diffphys import observe as ob

GRID = dp.Grid1D(32, 1.0, bc="neumann")
DENSE = ob.PointSensors(GRID, [0.1, 0.3, 0.55, 0.9])
SPARSE = ob.PointSensors(GRID, [0.3, 0.72])


def _irregular():
    schedule = ob.ObservationSchedule([0.002, 0.005, 0.006, 0.013], [DENSE, SPARSE, DENSE, SPARSE], dt=1e-3)
    values = np.linspace(-1.0, 1.0, schedule.size)
    values[2] = np.nan
    return schedule, values, np.linspace(0.1, 0.2, schedule.size)


def _assert_bit_identical(a: xr.Dataset, b: xr.Dataset):
    xr.testing.assert_identical(a, b)
    for name in list(a.variables):
        assert a[name].dtype == b[name].dtype
        assert a[name].values.tobytes() == b[name].values.tobytes(), name


def test_observation_dataset_layout_and_cf_attributes():
    schedule, values, sigma = _irregular()
    ds = dp.io.observations_to_dataset(schedule, values, sigma, units="K", long_name="temperature", time_units="s",
                                       length_units="m")
    assert ds["value"].dims == ("time", "sensor") and ds["value"].shape == (4, 5)  # the union of 5 sensors
    np.testing.assert_array_equal(ds["x"], [0.1, 0.3, 0.55, 0.9, 0.72])
    np.testing.assert_array_equal(ds["value"][1], [np.nan, values[4], np.nan, np.nan, values[5]])
    assert np.isnan(ds["value"][0, 2])  # the missing observation
    assert ds["value"].attrs == {"long_name": "temperature", "units": "K"}
    assert ds["time"].attrs["units"] == "s" and ds["x"].attrs["units"] == "m"
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["sensor_kind"] == "point"
    unknown = dp.io.observations_to_dataset(schedule, values, sigma)  # units not given: no units attribute
    assert all("units" not in unknown[name].attrs for name in ("value", "sigma", "time", "x"))


@pytest.mark.parametrize(
    "make",
    [
        _irregular,
        lambda: (ob.ObservationSchedule.from_steps([1, 2], ob.FootprintAverage(GRID, [0.2, 0.7], 0.1), dt=0.1),
                 np.arange(4.0), 0.5),
        lambda: (ob.ObservationSchedule.from_steps([3], ob.subsample(dp.Grid2D(8, 6, bc="dirichlet"), (3, 2)), dt=0.1),
                 np.arange(9.0), np.full(9, 0.25)),
    ],
    ids=["points-irregular", "footprints", "cells-2d"],
)
def test_netcdf_round_trip_is_bit_identical(tmp_path, make):
    schedule, values, sigma = make()
    ds = dp.io.observations_to_dataset(schedule, values, sigma, extra={"analysis": values + 1.0})
    path = dp.io.write_netcdf(ds, tmp_path / "obs.nc")
    back = dp.io.read_observations(path)
    _assert_bit_identical(ds, back)
    # And back to arrays: the same dataset again (sensor sets that change become NaN-masked columns).
    grid = schedule.grid
    schedule2, values2, sigma2 = dp.io.dataset_to_observations(back, grid, dt=schedule.dt)
    again = dp.io.observations_to_dataset(schedule2, values2, np.where(np.isfinite(values2), sigma2, np.nan),
                                          extra={"analysis": dp.io.dataset_to_observations(
                                              back.assign(value=back["analysis"]), grid, dt=schedule.dt)[1]})
    for name in ("value", "analysis"):
        np.testing.assert_array_equal(again[name], ds[name])
    np.testing.assert_array_equal(again["sigma"].where(np.isfinite(again["value"])), ds["sigma"].where(np.isfinite(ds["value"])))
    assert again.attrs["sensor_kind"] == ds.attrs["sensor_kind"]


def test_dataset_observations_give_the_same_4dvar_cost():
    schedule, values, sigma = _irregular()
    model = dp.Heat(GRID, 0.02, dt=1e-3)
    B = ob.DiffusionB(GRID, 0.5, 0.1)
    background = jnp.cos(jnp.pi * GRID.x)
    direct = da.StrongConstraint4DVar(model, schedule, values, ob.DiagonalR(sigma), B, background)
    ds = dp.io.observations_to_dataset(schedule, values, sigma)
    schedule2, values2, sigma2 = dp.io.dataset_to_observations(ds, GRID, dt=1e-3)
    via_file = da.StrongConstraint4DVar(model, schedule2, values2, ob.DiagonalR(sigma2), B, background)
    v = jax.random.normal(jax.random.key(0), GRID.shape)
    np.testing.assert_allclose(direct.cost(v), via_file.cost(v), rtol=1e-14)


def test_trajectory_datasets_round_trip(tmp_path):
    grid = dp.Grid2D(6, 5, (1.0, 2.0))
    states = np.random.default_rng(0).normal(size=(3, 6, 5))
    ds = dp.io.trajectory_to_dataset(grid, states, [0.0, 0.5, 1.0], names="u", long_names="temperature", units="K",
                                     length_units="m",
                                     fields={"kappa": (np.ones((6, 5)), {"long_name": "diffusivity", "units": "m2 s-1"})},
                                     attrs={"title": "test"})
    assert ds["u"].dims == ("time", "x", "y") and ds["kappa"].dims == ("x", "y")
    assert ds["u"].attrs == {"long_name": "temperature", "units": "K"} and ds["y"].attrs["units"] == "m"
    assert "units" not in ds["time"].attrs  # not given: unknown, not seconds
    _assert_bit_identical(ds, dp.io.open_netcdf(dp.io.write_netcdf(ds, tmp_path / "traj.nc")))
    wave = dp.io.trajectory_to_dataset(GRID, (np.zeros((2, 32)), np.ones((2, 32))), [0.0, 1.0],
                                       names=("u", "u_t"), long_names=("displacement", "velocity"), units=("m", "m s-1"))
    assert list(wave.data_vars) == ["u", "u_t"]
    with pytest.raises(ValueError, match=r"field 'u' has shape \(2, 32\), expected \(3, 32\)"):
        dp.io.trajectory_to_dataset(GRID, np.zeros((2, 32)), [0.0, 1.0, 2.0])


def test_netcdf_observations_in_a_group(tmp_path):
    schedule, values, sigma = _irregular()
    path = tmp_path / "analysis.nc"
    dp.io.write_netcdf(dp.io.trajectory_to_dataset(GRID, np.zeros((1, 32)), [0.0]), path)
    dp.io.write_netcdf(dp.io.observations_to_dataset(schedule, values, sigma), path, group="observations", mode="a")
    np.testing.assert_array_equal(dp.io.read_observations(path)["value"].values.ravel()[[0, 1, 3]], values[[0, 1, 3]])


def test_csv_observations(tmp_path):
    path = tmp_path / "obs.csv"
    path.write_text("time,x,value,sigma\n0.001,0.5,1.5,0.1\n0.001,0.25,2.0,0.2\n\n0.003,0.5,,0.1\n0.004,0.5,3.0,0.1\n")
    ds = dp.io.read_observations(path)
    np.testing.assert_array_equal(ds["time"], [0.001, 0.003, 0.004])
    np.testing.assert_array_equal(ds["x"], [0.25, 0.5])
    np.testing.assert_array_equal(ds["value"], [[2.0, 1.5], [np.nan, np.nan], [np.nan, 3.0]])
    schedule, values, sigma = dp.io.dataset_to_observations(ds, GRID, dt=1e-3)
    assert schedule.steps == (1, 3, 4) and np.isfinite(values).sum() == 3
    np.testing.assert_array_equal(sigma, [0.2, 0.1, 1.0, 1.0, 1.0, 0.1])  # σ of missing values is unused
    path2 = tmp_path / "obs2d.csv"
    path2.write_text("time,x,y,value\n0.5,0.1,0.2,1.0\n0.5,0.3,0.2,2.0\n")
    ds2 = dp.io.read_observations(path2, default_sigma=0.3)
    np.testing.assert_array_equal(ds2["sigma"], [[0.3, 0.3]])
    assert dp.io.dataset_to_observations(ds2, dp.Grid2D(4, 4), dt=0.25)[0].steps == (2,)


def test_csv_rows_out_of_time_order_are_sorted_with_a_note_and_names_map_the_columns(tmp_path):
    ordered = dp.io.read_observations(_csv(tmp_path, "time,x,value\n0.1,0.5,2\n0.1,0.25,4\n0.2,0.5,1\n", "a.csv"))
    shuffled = dp.io.read_observations(_csv(tmp_path, "time,x,value\n0.2,0.5,1\n0.1,0.5,2\n0.1,0.25,4\n", "b.csv"))
    np.testing.assert_array_equal(shuffled["value"], ordered["value"])
    np.testing.assert_array_equal(shuffled["time"], [0.1, 0.2])
    assert "were not in time order; they were sorted by time" in shuffled.attrs["notes"]
    assert "notes" not in ordered.attrs
    mine = _csv(tmp_path, "T,Position,Temperature,err\n0.1,0.5,2,0.1\n0.1,0.25,4,0.1\n0.2,0.5,1,0.1\n", "c.csv")
    named = dp.io.read_observations(mine, names={"time": "t", "x": "position", "value": "Temperature", "sigma": "err"})
    np.testing.assert_array_equal(named["value"], ordered["value"])
    with pytest.raises(ValueError, match=r"no column \['depth'\] \(names=...\); the columns are \['t', 'position'"):
        dp.io.read_observations(mine, names={"value": "depth"})
    with pytest.raises(ValueError, match=r"\['speed'\] are not observation names; valid keys are \['time'"):
        dp.io.read_observations(mine, names={"speed": "t"})


def test_netcdf_observations_with_the_users_own_names(tmp_path):
    schedule, values, sigma = _irregular()
    ds = dp.io.observations_to_dataset(schedule, values, sigma)
    theirs = ds.rename({"value": "temperature", "time": "t", "sensor": "station", "x": "lon"})
    path = dp.io.write_netcdf(theirs, tmp_path / "theirs.nc")
    back = dp.io.read_observations(path, names={"value": "temperature", "time": "t", "sensor": "station", "x": "lon"})
    for name in ("value", "sigma", "time", "x"):
        np.testing.assert_array_equal(back[name], ds[name])
    with pytest.raises(ValueError, match=r"has no \['temp'\] \(for \['value'\]\); it has variables"):
        dp.io.read_observations(path, names={"value": "temp"})
    with pytest.raises(ValueError, match="name the file's variable with names="):
        dp.io.read_observations(path)


def _csv(tmp_path, text, name="bad.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, match",
    [
        ("time,x,value\n0.2,0.5,1\n0.1,0.5,2\n0.2,0.5,3\n", r"duplicate .* at time 0\.2 \(lines 2 and 4\)"),  # lines of the file
        ("time,x,value\n0.1,0.5,1,9\n", "the rows have one field more than the header's 3 columns"),
        ("time,x,value\n0.1,0.5,1\n0.2,0.5,1,9\n", "is not a readable CSV table: Expected 3 fields in line 3, saw 4"),
        ("time,x,value\n0.1,0.5,1\n0.1,0.5,2\n", r"duplicate observation of the sensor at \(0\.5,\) at time 0\.1 \(lines 2 and 3\)"),
        ("time,value\n0.1,1\n", r"columns \['time', 'value'\]; a CSV needs the columns time, x\[, y\], value\[, sigma\]"),
        ("time,x,value,depth\n0.1,0.5,1,3\n", r"\(unknown: \['depth'\]\)"),
        ("time,x,value\n0.1,0.5,hot\n", r"line 2, column 'value': 'hot' is not a number"),
        ("time,x,value\n0.1,,1\n", "line 2: x is missing or not finite"),
        ("time,x,value\n0.1,0.5\n", "line 2: 2 fields, expected 3"),
        ("time,x,value\n", "has no observations"),
    ],
)
def test_csv_errors(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        dp.io.read_observations(_csv(tmp_path, text))


def test_observation_file_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        dp.io.read_observations(tmp_path / "nothing.nc")
    with pytest.raises(ValueError, match=r"unknown format '\.txt'; valid are \.nc and \.csv"):
        dp.io.read_observations(_csv(tmp_path, "x", name="obs.txt"))
    dp.io.write_netcdf(dp.io.trajectory_to_dataset(GRID, np.zeros((1, 32)), [0.0]), tmp_path / "t.nc")
    with pytest.raises(ValueError, match="has no variable 'value'.*and no group 'observations'"):
        dp.io.read_observations(tmp_path / "t.nc")
    ds = dp.io.read_observations(_csv(tmp_path, "time,x,value\n0.001,0.5,1\n0.002,0.5,2\n"))
    with pytest.raises(ValueError, match="no 'sigma' variable; give the observation error"):
        dp.io.dataset_to_observations(ds, GRID, dt=1e-3)
    with pytest.raises(ValueError, match=r"sigma at time 0\.002, sensor 0 is -1\.0; every observed value needs a finite sigma > 0"):
        dp.io.dataset_to_observations(ds.assign(sigma=(("time", "sensor"), [[0.1], [-1.0]])), GRID, dt=1e-3)
    with pytest.raises(ValueError, match=r"t=0\.002 \(position 1\) lies outside the assimilation window \[0, 0\.0015\]"):
        dp.io.dataset_to_observations(ds, GRID, dt=1e-3, t_end=0.0015, default_sigma=0.1)
    with pytest.raises(ValueError, match=r"sensor 0 at x=1\.5 lies outside the domain"):
        dp.io.dataset_to_observations(ds.assign_coords(x=("sensor", [1.5])), GRID, dt=1e-3, default_sigma=0.1)
    with pytest.raises(ValueError, match=r"observation times are not sorted"):
        dp.io.dataset_to_observations(ds.assign_coords(time=[0.002, 0.001]), GRID, dt=1e-3, default_sigma=0.1)
    with pytest.raises(ValueError, match=r"unknown sensor_kind 'radar'"):
        dp.io.dataset_to_observations(ds.assign_attrs(sensor_kind="radar"), GRID, dt=1e-3, default_sigma=0.1)
    with pytest.raises(ValueError, match=r"missing sensor coordinate\(s\) \['y'\]"):
        dp.io.dataset_to_observations(ds, dp.Grid2D(4, 4), dt=1e-3, default_sigma=0.1)
    with pytest.raises(ValueError, match=r"'value' must have dims \('time', 'sensor'\)"):
        dp.io.dataset_to_observations(ds.transpose("sensor", "time"), GRID, dt=1e-3, default_sigma=0.1)
    mixed = ob.ObservationSchedule.from_steps([1, 2], [DENSE, ob.FootprintAverage(GRID, [0.5], 0.1)], dt=0.1)
    with pytest.raises(ValueError, match=r"mixes sensor kinds \['footprint', 'point'\]"):
        dp.io.observations_to_dataset(mixed, np.zeros(5))


def test_write_json_is_strict_and_turns_non_finite_numbers_into_null(tmp_path):
    data = {"a": float("nan"), "b": [np.float64(np.inf), -math.inf, 1.5], "c": np.array([1.0, np.nan]),
            "d": {"e": np.int64(3), "f": None}}
    path = dp.io.write_json(tmp_path / "summary.json", data)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert strict == {"a": None, "b": [None, None, 1.5], "c": [1.0, None], "d": {"e": 3, "f": None}}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left


def test_an_interrupted_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "traj.nc"
    before = dp.io.trajectory_to_dataset(GRID, np.zeros((1, 32)), [0.0])
    dp.io.write_netcdf(before, path)
    original = path.read_bytes()

    class Interrupted(Exception):
        pass

    def half_written(self, target, *args, **kwargs):
        Path(target).write_bytes(b"CDF\x01 truncated")
        raise Interrupted

    after = dp.io.trajectory_to_dataset(GRID, np.ones((1, 32)), [0.0])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(xr.Dataset, "to_netcdf", half_written)
        with pytest.raises(Interrupted):
            dp.io.write_netcdf(after, path)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["traj.nc"]
    with dp.io.atomic_path(tmp_path / "new.txt") as tmp:
        tmp.write_text("complete")
        assert tmp.parent == tmp_path and tmp.name.startswith(dp.io.TEMPORARY_PREFIX) and tmp.suffix == ".txt"
        assert not (tmp_path / "new.txt").exists()  # the final name appears only once complete
    assert (tmp_path / "new.txt").read_text() == "complete"
