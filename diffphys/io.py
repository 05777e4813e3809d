"""xarray datasets and NetCDF files for observations and trajectories, with CF-style attributes.

xarray stays at the edges: these functions turn the arrays of the numerical core into labelled
datasets (and back) for files, notebooks and the command line. It is imported by the functions that
build or read datasets, not by ``import diffphys`` (xarray and pandas take about half a second to
import, which a session that writes no file need not pay).

* An **observation dataset** has dims ``(time, sensor)``: variables ``value`` and ``sigma`` (NaN
  where a sensor did not report at a time), sensor coordinates ``x`` (and ``y``) along ``sensor``,
  and the attribute ``sensor_kind`` (``"point"``, ``"footprint"`` with ``footprint_radius``, or
  ``"cell"``). Sensor sets that change over time become the union of all sensors, with NaN where a
  sensor is absent: the NaN masks of the 4D-Var residuals make that equivalent.
* A **trajectory dataset** has dims ``(time, x[, y])`` with one variable per state field.

Writing files: every file diffphys writes (NetCDF, JSON, pictures, checkpoints, saved networks)
goes first to a hidden temporary name in the same folder (``.tmp-<random>-<name>``), is flushed to
disk, and is then renamed over its final name (``os.replace``, atomic): an interrupted write never
leaves a truncated file under a final name (:func:`atomic_path`). JSON is strict (:func:`write_json`:
no ``NaN`` or ``Infinity``, non-finite numbers become ``null``).

Reading user files: :func:`read_observations` accepts NetCDF (an observation dataset, in the root
group or in a group ``observations`` as ``diffphys run`` writes it) or CSV with a header and the
columns ``time, x[, y], value[, sigma]``, one row per observation (read with pandas; rows out of
time order are sorted, and the dataset's ``notes`` say so); ``names=`` maps the file's own variable,
dimension or column names to these.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .grid import AbstractGrid
from .observe import FootprintAverage, GridMask, ObservationSchedule, PointSensors

if TYPE_CHECKING:
    import xarray as xr

__all__ = [
    "TEMPORARY_PREFIX",
    "atomic_path",
    "check_observation_names",
    "dataset_to_observations",
    "json_safe",
    "observations_to_dataset",
    "open_netcdf",
    "OBSERVATION_NAMES",
    "read_observations",
    "trajectory_to_dataset",
    "write_json",
    "write_netcdf",
]

_AXES = ("x", "y")
CONVENTIONS = "CF-1.8"
TEMPORARY_PREFIX = ".tmp-"


def _attrs(long_name: str, units: str | None) -> dict:
    """CF attributes: ``units`` only when known (an absent attribute says "not known", "1" says "dimensionless")."""
    return {"long_name": long_name} if units is None else {"long_name": long_name, "units": units}


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """A temporary path to write ``path``'s contents to; renamed over ``path`` when the block ends.

    The temporary file lies in ``path``'s folder (created if needed) as ``.tmp-<random>-<name>``
    (same suffix, so writers that go by the suffix pick the right format). When the ``with`` block
    ends normally, the file is flushed to disk and ``os.replace``-d onto ``path`` (atomic: readers
    see the old file or the new one, never a torn one); when it raises, the temporary is removed.

        with atomic_path(out / "analysis.png") as tmp:
            fig.savefig(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TEMPORARY_PREFIX}{secrets.token_hex(4)}-{path.name}"
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def json_safe(data):
    """``data`` with every non-finite float (NaN, ±inf) replaced by ``None`` and NumPy scalars and
    arrays turned into Python numbers and lists, so that it can be written as strict JSON."""
    if isinstance(data, dict):
        return {key: json_safe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(value) for value in data]
    if isinstance(data, np.ndarray):
        return json_safe(data.tolist())
    if isinstance(data, np.generic):
        data = data.item()
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def write_json(path, data, *, indent: int = 2) -> Path:
    """Write ``data`` as strict JSON (RFC 8259: non-finite numbers become ``null``), atomically.

    **Returns:** the path written.
    """
    path = Path(path)
    text = json.dumps(json_safe(data), indent=indent, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return path


def observations_to_dataset(
    schedule: ObservationSchedule,
    values,
    sigma=None,
    *,
    extra: dict | None = None,
    name: str = "u",
    long_name: str = "observed value",
    units: str | None = None,
    length_units: str | None = None,
    time_units: str | None = None,
) -> xr.Dataset:
    """An observation dataset (dims ``time``, ``sensor``) from a schedule and its stacked values.

    **Arguments:**

    - ``schedule``: the :class:`~diffphys.observe.ObservationSchedule`; all its operators must be of
      one kind (point sensors, footprints of one radius, or grid cells).
    - ``values``: the stacked observations (length ``schedule.size``), NaN where missing.
    - ``sigma``: their error standard deviations (scalar, per sensor or stacked; optional).
    - ``extra``: more stacked vectors to store the same way, e.g. ``{"analysis": H(x_a)}``.
    - ``name``, ``long_name``, ``units``: what is observed (the ``observed_field`` attribute and the
      ``value`` variable's attributes); ``length_units``, ``time_units``: of the coordinates. A
      ``units`` attribute is written only for units given (``None``, the default: not known).

    **Returns:** an ``xarray.Dataset``.
    """
    import xarray as xr

    kinds = {op.kind for op in schedule.operators}
    radii = {getattr(op, "radius", None) for op in schedule.operators}
    if len(kinds) != 1 or len(radii) != 1:
        raise ValueError(
            f"observations_to_dataset: the schedule mixes sensor kinds {sorted(kinds)} (radii {sorted(map(str, radii))}); "
            "a dataset holds one kind: write one dataset per kind"
        )
    kind = kinds.pop()
    values = np.asarray(values, dtype=float)
    if values.shape != (schedule.size,):
        raise ValueError(f"observations_to_dataset: values have shape {values.shape}, expected ({schedule.size},)")
    # The union of all sensors, in order of first appearance; each time fills its columns.
    sensors: dict[tuple, int] = {}
    columns = []
    for k in range(len(schedule.times)):
        locations = [tuple(p) for p in schedule.operator_at(k).locations.tolist()]
        if len(set(locations)) != len(locations):
            raise ValueError(f"observations_to_dataset: two sensors share a location at time {schedule.times[k]:g}")
        columns.append([sensors.setdefault(p, len(sensors)) for p in locations])
    rows = np.repeat(np.arange(len(schedule.times)), schedule.sizes)
    cols = np.concatenate(columns)

    def table(stacked):
        out = np.full((len(schedule.times), len(sensors)), np.nan)
        out[rows, cols] = stacked
        return out

    dims = ("time", "sensor")
    data = {"value": (dims, table(values), _attrs(long_name, units))}
    if sigma is not None:
        s = schedule.per_observation(sigma, "observations_to_dataset: sigma")
        data["sigma"] = (dims, table(s), _attrs(f"standard deviation of the {long_name} error", units))
    for key, stacked in (extra or {}).items():
        data[key] = (dims, table(np.asarray(stacked, dtype=float)), _attrs(f"{key} equivalent of the {long_name}", units))
    locations = np.array(list(sensors), dtype=float).reshape(len(sensors), -1)
    coords = {
        "time": ("time", np.asarray(schedule.times), _attrs("observation time", time_units)),
        "sensor": ("sensor", np.arange(len(sensors)), {"long_name": "sensor index"}),
    }
    for a in range(locations.shape[1]):
        coords[_AXES[a]] = ("sensor", locations[:, a], _attrs(f"sensor {_AXES[a]} position", length_units))
    attrs = {"Conventions": CONVENTIONS, "title": "diffphys observations", "sensor_kind": kind,
             "observed_field": name, "field_index": schedule.field}
    if kind == "footprint":
        attrs["footprint_radius"] = radii.pop()
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _sensor_operator(ds: xr.Dataset, grid: AbstractGrid):
    axes = _AXES[: grid.ndim]
    missing = [a for a in axes if a not in ds.coords and a not in ds]
    if missing:
        raise ValueError(
            f"observation dataset: missing sensor coordinate(s) {missing} along 'sensor' for a {grid.ndim}D grid"
        )
    points = np.stack([np.asarray(ds[a].values, dtype=float) for a in axes], axis=1)
    kind = ds.attrs.get("sensor_kind", "point")
    if kind == "point":
        return PointSensors(grid, points), np.arange(len(points))
    if kind == "footprint":
        if "footprint_radius" not in ds.attrs:
            raise ValueError("observation dataset: sensor_kind 'footprint' needs the attribute footprint_radius")
        return FootprintAverage(grid, points, float(ds.attrs["footprint_radius"])), np.arange(len(points))
    if kind == "cell":
        index = [np.rint(points[:, a] / h - 0.5).astype(int) for a, h in enumerate(grid.spacing)]
        centres = np.stack([(i + 0.5) * h for i, h in zip(index, grid.spacing)], axis=1)
        if not np.allclose(centres, points, rtol=0, atol=1e-9 * min(grid.spacing)):
            raise ValueError("observation dataset: sensor_kind 'cell' needs sensors at cell centres of the grid")
        mask = np.zeros(grid.shape, bool)
        mask[tuple(index)] = True
        flat = np.ravel_multi_index(tuple(index), grid.shape) if grid.ndim == 2 else index[0]
        return GridMask(grid, mask), np.argsort(flat)
    raise ValueError(f"observation dataset: unknown sensor_kind {kind!r}; valid are ['cell', 'footprint', 'point']")


def dataset_to_observations(
    ds: xr.Dataset, grid: AbstractGrid, *, dt: float, t0: float = 0.0, t_end: float | None = None,
    default_sigma: float | None = None,
) -> tuple[ObservationSchedule, np.ndarray, np.ndarray]:
    """A schedule, stacked values and σ from an observation dataset, for a model grid and time step.

    Every time observes the dataset's whole sensor set; absent values (NaN) are masked in 4D-Var.
    Times must be strictly increasing, within ``[t0, t_end]`` and on the model's time grid.

    **Arguments:** ``ds`` (see the module docstring); ``grid``; ``dt``, ``t0``, ``t_end`` (the
    window); ``default_sigma`` (used where the dataset has no ``sigma`` variable).

    **Returns:** ``(schedule, values, sigma)``, the last two stacked (length ``schedule.size``).
    """
    if "value" not in ds:
        raise ValueError(f"observation dataset: no variable 'value'; found {sorted(ds.data_vars)}")
    value = ds["value"]
    if value.dims != ("time", "sensor"):
        raise ValueError(f"observation dataset: 'value' must have dims ('time', 'sensor'), got {value.dims}")
    operator, order = _sensor_operator(ds, grid)
    times = np.asarray(ds["time"].values, dtype=float)
    schedule = ObservationSchedule(times, operator, dt=dt, t0=t0, t_end=t_end, field=int(ds.attrs.get("field_index", 0)))
    values = np.asarray(value.values, dtype=float)[:, order]
    if "sigma" in ds:
        sigma = np.broadcast_to(np.asarray(ds["sigma"].transpose(*value.dims).values, dtype=float), values.shape)[:, order]
    elif default_sigma is not None:
        sigma = np.full(values.shape, float(default_sigma))
    else:
        raise ValueError("observation dataset: no 'sigma' variable; give the observation error (e.g. noise.sigma in a case file)")
    infinite = np.argwhere(np.isinf(values))
    if infinite.size:
        k, s = (int(i) for i in infinite[0])
        raise ValueError(
            f"observation dataset: the value at time {times[k]:g}, sensor {int(order[s])} is {values[k, s]}; a "
            "reading must be finite, or NaN (or empty in a CSV) where it is missing"
        )
    present = np.isfinite(values)
    if not present.any():
        raise ValueError(f"observation dataset: all {values.size} values are missing (NaN); there is nothing to assimilate")
    bad = present & ~(np.isfinite(sigma) & (sigma > 0))
    if bad.any():
        k, s = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"observation dataset: sigma at time {times[k]:g}, sensor {int(order[s])} is {float(sigma[k, s])!r}; "
            "every observed value needs a finite sigma > 0"
        )
    return schedule, values.ravel(), np.where(present, sigma, 1.0).ravel()


def trajectory_to_dataset(
    grid: AbstractGrid,
    states,
    times,
    *,
    names: str | tuple[str, ...] = "u",
    long_names: str | tuple[str, ...] = "state",
    units: str | None | tuple[str | None, ...] = None,
    fields: dict | None = None,
    length_units: str | None = None,
    time_units: str | None = None,
    attrs: dict | None = None,
) -> xr.Dataset:
    """A trajectory dataset (dims ``time``, ``x``[, ``y``]) from saved states.

    **Arguments:**

    - ``grid``; ``states``: shape ``(T, *grid)``, or a tuple of such arrays for a tuple state;
      ``times``: the ``T`` times.
    - ``names``, ``long_names``, ``units``: one per state field (a tuple for tuple states).
    - ``length_units``, ``time_units``: of the coordinates. A ``units`` attribute is written only for
      units given (``None``, the default: not known).
    - ``fields``: time-independent fields to add, ``{name: (array of the grid's shape, attrs)}``
      (e.g. a diffusivity field).
    - ``attrs``: global attributes to add.

    **Returns:** an ``xarray.Dataset``.
    """
    import xarray as xr

    states = states if isinstance(states, tuple) else (states,)
    names, long_names, units = (v if isinstance(v, tuple) else (v,) for v in (names, long_names, units))
    if not len(states) == len(names) == len(long_names) == len(units):
        raise ValueError(f"trajectory_to_dataset: {len(states)} state fields but {len(names)} names")
    times = np.asarray(times, dtype=float)
    space = _AXES[: grid.ndim]
    data = {}
    for state, name, long_name, unit in zip(states, names, long_names, units):
        arr = np.asarray(state, dtype=float)
        if arr.shape != (len(times), *grid.shape):
            raise ValueError(
                f"trajectory_to_dataset: field {name!r} has shape {arr.shape}, expected {(len(times), *grid.shape)}"
            )
        data[name] = (("time", *space), arr, _attrs(long_name, unit))
    for name, (arr, field_attrs) in (fields or {}).items():
        data[name] = (space, np.asarray(arr, dtype=float), dict(field_attrs))
    coords = {"time": ("time", times, _attrs("time", time_units))}
    for a, axis in enumerate(space):
        coords[axis] = (axis, np.asarray(getattr(grid, axis)), _attrs(f"cell-centre {axis} position", length_units))
    return xr.Dataset(data, coords=coords, attrs={"Conventions": CONVENTIONS, **(attrs or {})})


def write_netcdf(ds: xr.Dataset, path, *, group: str | None = None, mode: str = "w",
                 groups: dict[str, xr.Dataset] | None = None) -> Path:
    """Write ``ds`` to a NetCDF-4 file (lossless: float64 values and NaNs are kept bit for bit), atomically.

    ``group`` writes into a NetCDF group; ``mode="a"`` adds a group to an existing file;
    ``groups`` (``{name: dataset}``) adds more groups to the same file. The file is written under
    a temporary name and renamed into place (see :func:`atomic_path`; with ``mode="a"`` the
    existing file is copied and the copy extended), so an interrupted write leaves the previous
    file or none.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        if mode == "a" and path.exists():
            shutil.copyfile(path, tmp)
        ds.to_netcdf(tmp, mode=mode, group=group, engine="netcdf4", format="NETCDF4")
        for name, extra in (groups or {}).items():
            extra.to_netcdf(tmp, mode="a", group=name, engine="netcdf4", format="NETCDF4")
    return path


def open_netcdf(path, *, group: str | None = None) -> xr.Dataset:
    """Load a NetCDF file written by :func:`write_netcdf` into memory (no time decoding)."""
    import xarray as xr

    return xr.load_dataset(path, group=group, engine="netcdf4", decode_timedelta=False, decode_times=False)


OBSERVATION_NAMES = ("time", "sensor", "x", "y", "value", "sigma")
"""The names diffphys reads in an observation file (variables, coordinates, dimensions or CSV columns)."""


def read_observations(path, *, default_sigma: float | None = None, names=None) -> xr.Dataset:
    """Read a user's observation file (NetCDF or CSV) into an observation dataset.

    **Arguments:**

    - ``path``: a ``.nc`` file with an observation dataset (root group, or group
      ``observations``), or a ``.csv`` file with a header row and columns ``time``, ``x`` (and
      ``y`` for 2D), ``value`` and optionally ``sigma``: one row per observation; empty or ``nan``
      values are missing observations (``inf`` is an error, and so is a file with no reading).
      Rows out of time order are sorted by time (stably; the dataset's ``notes`` attribute says
      so); two rows for the same sensor and time are an error.
    - ``default_sigma``: σ for a CSV file without a ``sigma`` column (otherwise the dataset has no
      ``sigma``, and :func:`dataset_to_observations` needs one).
    - ``names``: the file's own names for diffphys's, e.g. ``{"value": "temperature", "time": "t",
      "sensor": "station", "x": "lon"}`` (keys from :data:`OBSERVATION_NAMES`; NetCDF variables,
      coordinates or dimensions, or CSV columns, matched without regard to case for CSV).

    **Returns:** an ``xarray.Dataset`` as described in the module docstring.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"observation file {str(path)!r} does not exist")
    names = check_observation_names(names)
    suffix = path.suffix.lower()
    if suffix in (".nc", ".nc4", ".netcdf"):
        ds = _renamed(open_netcdf(path), names, path)
        if "value" not in ds:
            import netCDF4

            with netCDF4.Dataset(path) as nc:
                groups = list(nc.groups)
            if "observations" not in groups:
                raise ValueError(
                    f"observation file {str(path)!r} has no variable 'value' (variables: {sorted(ds.data_vars)}) and "
                    "no group 'observations'; name the file's variable with names={'value': ...}"
                )
            ds = _renamed(open_netcdf(path, group="observations"), names, path)
        return ds
    if suffix == ".csv":
        return _read_csv(path, default_sigma, names)
    raise ValueError(f"observation file {str(path)!r}: unknown format {suffix!r}; valid are .nc and .csv")


def check_observation_names(names) -> dict[str, str]:
    """``names`` (diffphys's observation names to a file's) as a dict, checked; ``None`` gives ``{}``."""
    if names is None:
        return {}
    if not isinstance(names, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in names.items()):
        raise ValueError(f"names must map diffphys's names to the file's (strings to strings), got {names!r}")
    unknown = sorted(set(names) - set(OBSERVATION_NAMES))
    if unknown:
        raise ValueError(f"names: {unknown} are not observation names; valid keys are {list(OBSERVATION_NAMES)}")
    return dict(names)


def _renamed(ds: xr.Dataset, names: dict[str, str], path: Path) -> xr.Dataset:
    """``ds`` with the file's names (``names``' values) renamed to diffphys's (its keys)."""
    present = set(ds.variables) | set(ds.dims)
    missing = {ours: theirs for ours, theirs in names.items() if theirs not in present and ours not in present}
    if missing:
        raise ValueError(
            f"observation file {str(path)!r} has no {sorted(missing.values())} (for {sorted(missing)}); it has "
            f"variables {sorted(map(str, ds.variables))} and dimensions {sorted(map(str, ds.dims))}"
        )
    return ds.rename({theirs: ours for ours, theirs in names.items() if theirs in present and theirs != ours})


def _read_csv(path: Path, default_sigma: float | None, names: dict[str, str]) -> xr.Dataset:
    """A CSV of one observation per row (read with pandas) as an observation dataset."""
    import pandas as pd
    import xarray as xr

    try:  # the Python engine pads a short row with NaN (an empty field stays ''): the two can be told apart
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, skip_blank_lines=True,
                            engine="python")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"observation file {str(path)!r} is not a readable CSV table: {error}") from None
    if not isinstance(frame.index, pd.RangeIndex):  # pandas took the first column as an index
        raise ValueError(f"observation file {str(path)!r}: the rows have one field more than the header's "
                         f"{len(frame.columns)} columns")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    wanted = {theirs.strip().lower(): ours for ours, theirs in names.items()}
    absent = sorted(theirs for theirs in wanted if theirs not in frame.columns)
    if absent:
        raise ValueError(f"observation file {str(path)!r}: no column {absent} (names=...); the columns are {list(frame.columns)}")
    frame = frame.rename(columns=wanted)
    header = list(frame.columns)
    axes = [a for a in _AXES if a in header]
    unknown = [h for h in header if h not in ("time", "x", "y", "value", "sigma")]
    if any(r not in header for r in ("time", "x", "value")) or unknown:
        raise ValueError(
            f"observation file {str(path)!r}: columns {header}; a CSV needs the columns time, x[, y], value[, sigma]"
            + (f" (unknown: {unknown}); map the file's own names with names={{'value': ...}}" if unknown else "")
        )
    short = np.flatnonzero(frame.isna().any(axis=1).to_numpy())  # pandas pads a short row with NaN
    if short.size:
        i = int(short[0])
        raise ValueError(f"observation file {str(path)!r}, line {i + 2}: {int(frame.iloc[i].notna().sum())} fields, "
                         f"expected {len(header)}")
    frame = frame[frame.apply(lambda row: any(c.strip() for c in row), axis=1)].reset_index(drop=True)
    if frame.empty:
        raise ValueError(f"observation file {str(path)!r} has no observations")
    col = {}
    for name in header:
        text = frame[name].str.strip()
        numbers = pd.to_numeric(text.where(text != "", "nan"), errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(np.isnan(numbers) & ~text.str.lower().isin(["", "nan"]).to_numpy())
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"observation file {str(path)!r}, line {i + 2}, column {name!r}: {frame[name][i]!r} is not a number"
            )
        col[name] = numbers
    for name in ["time", *axes]:
        bad = np.flatnonzero(~np.isfinite(col[name]))
        if bad.size:
            raise ValueError(f"observation file {str(path)!r}, line {int(bad[0]) + 2}: {name} is missing or not finite")
    notes = []
    line = np.arange(len(frame)) + 2  # the file's line of each row (header: line 1)
    if np.any(np.diff(col["time"]) < 0):
        order = np.argsort(col["time"], kind="stable")
        col = {name: values[order] for name, values in col.items()}
        line = line[order]
        notes.append(f"the rows of {path.name} were not in time order; they were sorted by time")
    t = col["time"]
    times = np.unique(t)
    locations = np.stack([col[a] for a in axes], axis=1)
    sensors, sensor_of_row = np.unique(locations, axis=0, return_inverse=True)
    time_of_row = np.searchsorted(times, t)
    seen: dict[tuple[int, int], int] = {}
    for i, key in enumerate(zip(time_of_row.tolist(), sensor_of_row.reshape(-1).tolist())):
        if key in seen:
            first, second = sorted((int(line[seen[key]]), int(line[i])))
            raise ValueError(
                f"observation file {str(path)!r}: duplicate observation of the sensor at {tuple(float(c) for c in locations[i])} at time "
                f"{t[i]:g} (lines {first} and {second}); give one value per sensor and time"
            )
        seen[key] = i
    shape = (len(times), len(sensors))
    value = np.full(shape, np.nan)
    value[time_of_row, sensor_of_row.reshape(-1)] = col["value"]
    dims = ("time", "sensor")
    data = {"value": (dims, value, {"long_name": "observed value"})}
    if "sigma" in col or default_sigma is not None:
        sigma = np.full(shape, np.nan)
        sigma[time_of_row, sensor_of_row.reshape(-1)] = col["sigma"] if "sigma" in col else float(default_sigma)
        data["sigma"] = (dims, sigma, {"long_name": "standard deviation of the observed value error"})
    coords = {"time": ("time", times, {"long_name": "observation time"}),
              "sensor": ("sensor", np.arange(len(sensors)), {"long_name": "sensor index"})}
    for a, axis in enumerate(axes):
        coords[axis] = ("sensor", sensors[:, a], {"long_name": f"sensor {axis} position"})
    attrs = {"Conventions": CONVENTIONS, "title": f"observations from {path.name}", "sensor_kind": "point",
             "field_index": 0}
    if notes:
        attrs["notes"] = "; ".join(notes)
    return xr.Dataset(data, coords=coords, attrs=attrs)
