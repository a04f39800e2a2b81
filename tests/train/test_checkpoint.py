"""Checkpoints: save/load round trip through `load_run`, atomic writes, and clear errors for
missing, corrupt, other-version and other-schema checkpoints."""

from __future__ import annotations

import pickle

import pytest
import torch

import ctd_runtime
from ctd_runtime.codec import HeatmapCodec
from ctd_runtime.errors import CtdError
from ctd_runtime.schema import get_schema
from ctd_train import checkpoint as ckpt_mod
from ctd_train.checkpoint import LoadedRun, load_run, read_checkpoint, save_checkpoint
from ctd_train.methods import MethodConfig, build_method
from tests.train._tiny_training import TINY, TINY_NORMALIZATION, tiny_config, tiny_teachers


def _save(tmp_path, method_name="ctd-com", teacher_name=TINY, teacher=None, name="checkpoint_best.pt",
          schema="imm14", input_size=64):
    from ctd_train.teachers import create_teacher

    sch = get_schema(schema)
    if teacher is None and method_name != "hg":
        teacher = create_teacher(teacher_name)
    mcfg = MethodConfig(name=method_name, head_channels=16, hg_stacks=1)
    torch.manual_seed(0)
    method = build_method(mcfg, sch.num_landmarks, teacher)
    config = tiny_config(tmp_path / "data", tmp_path / "run", method=method_name, teacher=teacher_name,
                         input_size=input_size, run_id="run-1")
    norm = method.input_normalization(teacher)
    path = save_checkpoint(
        tmp_path / "run" / name, predictor=method.predictor, config=config.to_dict(), schema=sch,
        teacher_name=teacher_name, input_spec=None if teacher is None else teacher.input_spec.to_dict(),
        normalization=norm, codec=HeatmapCodec(input_size, 4, 1.5), run_id="run-1", epoch=3, decode="dark",
        metrics={"val_me_pfl": 0.5}, training=None,
    )
    return path, method


@pytest.fixture()
def tiny(monkeypatch):
    tiny_teachers(monkeypatch)


def test_round_trip(tmp_path, tiny):
    path, method = _save(tmp_path)
    run = load_run(tmp_path / "run")
    assert isinstance(run, LoadedRun)
    assert run.run_dir == tmp_path / "run" and run.checkpoint_path == path
    assert run.schema == get_schema("imm14")
    assert run.normalization == TINY_NORMALIZATION
    assert run.codec == HeatmapCodec(64, 4, 1.5)
    assert run.input_size == 64 and run.decode == "dark" and run.run_id == "run-1" and run.epoch == 3
    assert run.ctd_version == ctd_runtime.__version__ and run.method_name == "ctd-com"
    assert run.config["method"]["name"] == "ctd-com"
    assert not run.predictor.training
    x = torch.randn(2, 3, 64, 64)
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(run.predictor(x), method.predictor(x), rtol=0, atol=0)
        assert run.predictor(x).shape == (2, 14, 16, 16)
    assert load_run(path).run_id == "run-1"  # the file itself works too


def test_atomic_write_keeps_the_old_file(tmp_path, tiny, monkeypatch):
    path, _ = _save(tmp_path)
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError):
        _save(tmp_path)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_missing(tmp_path, tiny):
    with pytest.raises(CtdError, match="run folder not found"):
        load_run(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CtdError, match="checkpoint_best.pt: checkpoint not found"):
        load_run(tmp_path / "empty")
    with pytest.raises(CtdError, match="'best' or 'last'"):
        load_run(tmp_path / "empty", which="first")


def test_corrupt(tmp_path, tiny):
    path, _ = _save(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for content in (data[: len(data) // 2], b"not a checkpoint at all", pickle.dumps({1, 2}, protocol=4)):
        path.write_bytes(content)
        with pytest.raises(CtdError) as e:
            load_run(tmp_path / "run")
        msg = str(e.value)  # one line naming the file; none of PyTorch's text, nor its unsafe advice
        assert msg == f"{path}: cannot read the checkpoint ({len(content)} bytes): truncated, or not a ctd checkpoint"
    torch.save({"some": "dict"}, path)
    with pytest.raises(CtdError, match="not a ctd checkpoint"):
        load_run(tmp_path / "run")


def test_weights_that_do_not_fit(tmp_path, tiny):
    path, _ = _save(tmp_path)
    c = torch.load(path, weights_only=True)
    c["predictor"].pop(next(iter(c["predictor"])))
    torch.save(c, path)
    with pytest.raises(CtdError, match="do not fit"):
        load_run(tmp_path / "run")


def test_other_ctd_version(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(ctd_runtime, "__version__", "0.0.1-old")
    path, _ = _save(tmp_path)
    monkeypatch.undo()
    tiny_teachers(monkeypatch)
    with pytest.raises(CtdError) as e:
        load_run(tmp_path / "run")
    msg = str(e.value)
    assert str(path) in msg and "0.0.1-old" in msg and ctd_runtime.__version__ in msg


def test_other_schema(tmp_path, tiny):
    path, _ = _save(tmp_path)
    with pytest.raises(CtdError, match="schema 'imm58'.*was expected") as e:
        load_run(tmp_path / "run", expected_schema=get_schema("imm58"))
    assert str(path) in str(e.value)
    assert read_checkpoint(path, expected_schema=get_schema("imm14"))["epoch"] == 3


def test_unknown_teacher_is_a_clear_error(tmp_path, tiny, monkeypatch):
    from ctd_train.teachers import _registry

    _save(tmp_path)
    monkeypatch.delitem(_registry._REGISTRY, TINY)
    with pytest.raises(CtdError, match="cannot rebuild.*tiny-test"):
        load_run(tmp_path / "run")


def test_hg_needs_no_teacher(tmp_path):
    _save(tmp_path, method_name="hg", teacher_name="whatever")
    run = load_run(tmp_path / "run")
    assert run.method_name == "hg"
    assert run.predictor(torch.zeros(1, 3, 64, 64)).shape == (1, 14, 16, 16)


def test_real_teacher_rebuilt_from_its_skeleton(tmp_path):
    """A ctd-ed student of the real HSE architecture comes back without the weights file."""
    from ctd_train.teachers import teacher_skeleton

    teacher = teacher_skeleton("hse-mobilenet-vggface2")
    _, method = _save(tmp_path, method_name="ctd-ed", teacher_name=teacher.name, teacher=teacher)
    run = load_run(tmp_path / "run")
    assert run.normalization == teacher.input_spec.normalization
    x = torch.randn(1, 3, 64, 64)
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(run.predictor(x), method.predictor(x), rtol=0, atol=0)


def test_a_run_saved_before_flip_sources_still_loads_as_its_schema(tmp_path, tiny):
    """Schemas gained flip_sources; a checkpoint saved without them names the same landmarks."""
    import torch

    path, _ = _save(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["schema"].pop("flip_sources", None)
    ckpt["schema"]["description"] = "an older ctd's wording"
    torch.save(ckpt, path)
    assert read_checkpoint(path, expected_schema=get_schema("imm14"))["epoch"] == 3
    moved = get_schema("imm14").to_dict()
    moved["source_indices"][0] = 13
    ckpt["schema"] = moved
    torch.save(ckpt, path)
    with pytest.raises(CtdError, match="was expected"):
        read_checkpoint(path, expected_schema=get_schema("imm14"))
