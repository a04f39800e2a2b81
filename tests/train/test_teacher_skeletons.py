"""A skeleton has the loaded teacher's exact architecture, so a checkpoint's weights fit it."""

import pytest
import torch

from ctd_runtime.errors import CtdError
from ctd_train.teachers import teacher_skeleton


def _load(name, teachers_dir):
    from ctd_train.teachers import create_teacher

    files = {
        "dlib-resnet29": teachers_dir / "dlib-resnet29" / "dlib_face_recognition_resnet_model_v1.dat",
        "hse-mobilenet-vggface2": teachers_dir / "hse-mobilenet-vggface2" / "faceres-deep.json",
    }
    return create_teacher(name, files[name])


@pytest.mark.parametrize("name", ["dlib-resnet29", "hse-mobilenet-vggface2"])
def test_skeleton_matches_loaded_architecture(name, teachers_dir):
    real = _load(name, teachers_dir)
    skel = teacher_skeleton(name)
    assert skel.input_spec == real.input_spec
    real_sd, skel_sd = real.network.state_dict(), skel.network.state_dict()
    assert real_sd.keys() == skel_sd.keys()
    assert all(real_sd[k].shape == skel_sd[k].shape for k in real_sd)
    skel.network.load_state_dict(real_sd)
    x = torch.randn(1, 3, 160, 160) * 50
    with torch.no_grad():
        torch.testing.assert_close(skel.network(x)["features"], real.network.eval()(x)["features"])


def test_unknown_skeleton():
    with pytest.raises(CtdError, match="known teachers"):
        teacher_skeleton("vgg-nope")
