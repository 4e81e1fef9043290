"""Training-signal monitors (loss slope, gradient norm, plateau). Pure Python/numpy, no I/O."""
from monitors.grad_norm import GradNormMonitor
from monitors.loss_slope import LossSlope, least_squares_slope
from monitors.plateau import PlateauDetector
from monitors.signals import FEATURE_NAMES, Signals
from monitors.suite import MonitorSuite

__all__ = ["FEATURE_NAMES", "GradNormMonitor", "LossSlope", "MonitorSuite", "PlateauDetector",
           "Signals", "least_squares_slope"]
