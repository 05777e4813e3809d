"""Observation operators (point sensors, footprints, masks), observation schedules, error covariances
(R, B) and twin experiments."""

from ._covariance import (
    AbstractCovariance as AbstractCovariance,
    DiagonalR as DiagonalR,
    DiffusionB as DiffusionB,
)
from ._operators import (
    AbstractObservationOperator as AbstractObservationOperator,
    AbstractSparseObservation as AbstractSparseObservation,
    FootprintAverage as FootprintAverage,
    GridMask as GridMask,
    PointSensors as PointSensors,
    subsample as subsample,
)
from ._schedule import TIME_TOLERANCE as TIME_TOLERANCE, ObservationSchedule as ObservationSchedule
from ._twin import TwinExperiment as TwinExperiment, twin_experiment as twin_experiment
