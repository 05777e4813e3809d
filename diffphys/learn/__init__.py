"""Learned model-error corrections: corrected steppers, correction networks, model-error scenarios,
solver-in-the-loop training, checkpoints and training from sparse observations."""

from ._corrected import FEEDS as FEEDS, CorrectedStepper as CorrectedStepper
from ._networks import MLP as MLP, ConvNet as ConvNet
