"""Teachers: real face-recognition networks, loaded from their original formats.

One module per teacher, each declaring its `TeacherEntry` (see `_registry`)."""

from ctd_train.teachers._base import InputSpec, Teacher, TeacherNetwork
from ctd_train.teachers._registry import (
    TeacherEntry,
    create_teacher,
    list_teachers,
    register_teacher,
    teacher_entry,
    teacher_skeleton,
    teachers_with_classifier,
)

__all__ = [
    "InputSpec", "Teacher", "TeacherEntry", "TeacherNetwork", "create_teacher", "list_teachers",
    "register_teacher", "teacher_entry", "teacher_skeleton", "teachers_with_classifier",
]
