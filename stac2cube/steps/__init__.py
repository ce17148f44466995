"""Processing steps. Every step follows :class:`~stac2cube.steps.base.Step`."""

from .base import Scene, Step, StepResult

__all__ = ["Scene", "Step", "StepResult"]
