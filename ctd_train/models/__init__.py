"""Landmark models: the student (teacher encoder + SimpleBaseline head) and the stacked hourglass."""

from ctd_train.models.hourglass import HOURGLASS_NORMALIZATION, StackedHourglass
from ctd_train.models.student import LandmarkStudent, SimpleBaselineHead, build_student

__all__ = [
    "HOURGLASS_NORMALIZATION", "LandmarkStudent", "SimpleBaselineHead", "StackedHourglass", "build_student",
]
