"""Fixtures of the bad-input corpus: a tiny trained run (one epoch of the tiny test teacher),
data folders made in tmp_path, and the tiny exported model of the station tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.runtime.conftest import tiny_model  # noqa: F401 - the station's tiny model.onnx
from tests.train._data_synth import make_folder
from tests.train._tiny_training import tiny_config, tiny_teachers

TRAIN_ARGS = ["--teacher", "tiny-test", "--method", "ctd-com", "--epochs", "1", "--input-size", "64",
              "--head-channels", "16", "--hg-stacks", "1", "--val-subjects", "1", "--test-subjects", "1",
              "--threads", "1", "--no-progress"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A run dir (one epoch, tiny teacher, 64 px crops); copy it before changing it."""
    pytest.importorskip("torch")
    from ctd_train.trainer import train

    mp = pytest.MonkeyPatch()
    tiny_teachers(mp)
    try:
        root = tmp_path_factory.mktemp("bad-input-run")
        data, _ = make_folder(root / "data", n_images=8, n_subjects=4)
        return train(tiny_config(data, root / "run", epochs=1), progress=False, evaluate_test=False)
    finally:
        mp.undo()


@pytest.fixture
def tiny(monkeypatch):
    """The tiny test teachers, registered for one test (load_run rebuilds the student from them)."""
    tiny_teachers(monkeypatch)


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))
