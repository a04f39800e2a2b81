"""Teachers: real face-recognition networks, loaded from their original formats."""

from ctd_train.teachers._base import InputSpec, Teacher, TeacherNetwork
from ctd_train.teachers.skeletons import teacher_skeleton
from ctd_train.teachers._registry import (
    create_teacher,
    list_teachers,
    register_teacher,
    teacher_entry,
    teachers_with_classifier,
)

__all__ = [
    "InputSpec", "Teacher", "TeacherNetwork", "create_teacher", "list_teachers",
    "register_teacher", "teacher_entry", "teacher_skeleton", "teachers_with_classifier",
]
