"""CEOS-ARD: the Optical Surface Reflectance profile of stac2cube's items, the requirement table
and the self-assessment of each item and collection (docs/ard.md)."""

from __future__ import annotations

from .assessment import AssessmentCounts, count_summaries, write_assessment
from .profile import ASSESSMENT_FILE, CEOS_ARD_SCHEMA, apply_profile, geometric_accuracy
from .requirements import (
    REQUIREMENTS,
    SPECIFICATION,
    SPECIFICATION_VERSION,
    ItemAssessment,
    Requirement,
    Verdict,
    assess_item,
)

__all__ = [
    "ASSESSMENT_FILE",
    "CEOS_ARD_SCHEMA",
    "REQUIREMENTS",
    "SPECIFICATION",
    "SPECIFICATION_VERSION",
    "AssessmentCounts",
    "ItemAssessment",
    "Requirement",
    "Verdict",
    "apply_profile",
    "assess_item",
    "count_summaries",
    "geometric_accuracy",
    "write_assessment",
]
