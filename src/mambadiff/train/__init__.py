"""The shared training loop, optimizer groups, EMA, checkpoint I/O and distributed setup."""
from .loop import StepContext, TrainConfig, Trainer, TrainResult, seed_everything

__all__ = ["StepContext", "TrainConfig", "Trainer", "TrainResult", "seed_everything"]
