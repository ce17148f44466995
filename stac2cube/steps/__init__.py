"""Processing steps. Every step follows :class:`~stac2cube.steps.base.Step`."""

from .base import AuxLayer, AuxRequest, LayerInfo, Scene, Step, StepResult

__all__ = ["AuxLayer", "AuxRequest", "LayerInfo", "Scene", "Step", "StepResult"]
