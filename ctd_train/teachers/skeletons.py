"""Teacher architectures without weights: a checkpoint rebuilds its student from these, so
exporting or evaluating a run never needs the teacher's weight file (the student's own weights,
saved in the checkpoint, replace the random ones)."""

from __future__ import annotations

from typing import Callable

from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from ctd_train.teachers._base import InputSpec, Teacher, TeacherNetwork

# dlib stores its input means as float32 in the .dat file (teachers README, 1.2)
DLIB_MEANS = (122.78199768066406, 117.0009994506836, 104.2979965209961)


def _dlib() -> Teacher:
    from ctd_train.teachers import dlib_resnet as d

    net = TeacherNetwork(d.DlibResNetEncoder(), feature_channels=d.FEATURE_CHANNELS,
                         classifier=None, num_classes=None, embedding=d.DlibEmbedding())
    spec = InputSpec(d.TRAINED_SIZE, Normalization("RGB", DLIB_MEANS, (1 / 256,) * 3))
    return Teacher(name=d.NAME, input_spec=spec, network=net)


def _hse() -> Teacher:
    from ctd_train.teachers import hse_mobilenet as h

    net = TeacherNetwork(h.HseEncoder(), feature_channels=h.FEATURE_CHANNELS, classifier=h.HseHeads(),
                         num_classes=h.NUM_AGE_CLASSES, embedding=h.GlobalMean())
    return Teacher(name=h.NAME, input_spec=InputSpec(h.INPUT_SIZE, h.NORMALIZATION), network=net)


def _vggface2() -> Teacher:
    from ctd_train.teachers import vggface2_resnet as v

    return Teacher(name=v.NAME, input_spec=v.INPUT_SPEC, network=v.build_network())


_SKELETONS: dict[str, Callable[[], Teacher]] = {
    "dlib-resnet29": _dlib,
    "hse-mobilenet-vggface2": _hse,
    "resnet50-vggface2": _vggface2,
}


def teacher_skeleton(name: str) -> Teacher:
    """The teacher `name` with its architecture and input spec but random weights."""
    if name not in _SKELETONS:
        raise CtdError(f"unknown teacher {name!r}: known teachers are {', '.join(sorted(_SKELETONS))}")
    teacher = _SKELETONS[name]()
    teacher.network.eval()
    return teacher
