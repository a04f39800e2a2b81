"""benchmarks/_variants.py: `NAME:key=value` specs become the TrainConfigs the studies train."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _variants import add_run_args, parse_variant, variant_config  # noqa: E402


def _args(tmp_path: Path) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_run_args(p, epochs=30, train_subjects=0, out=str(tmp_path), name="t")
    return p.parse_args(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "runs")])


def test_a_variant_sets_method_run_and_augmentation(tmp_path):
    name, values = parse_variant("w5:head=skip,pflw=5,flip=1,schema=imm58,rotation=20,input=320,pfll=20,select=pfl")
    config = variant_config(_args(tmp_path), name, values, seed=2)
    assert name == "w5" and config.out.endswith("w5-s2") and config.seed == 2
    assert config.method.head == "skip" and config.pfl_weight == 5.0 and config.schema == "imm58"
    assert config.augment.flip is True and config.augment.rotation_deg == 20.0 and config.input_size == 320
    assert config.pfl_length_weight == 20.0 and config.select == "pfl"
    plain = variant_config(_args(tmp_path), *parse_variant("plain:"), seed=0)
    assert plain.method.head == "simple" and plain.pfl_weight == 1.0 and plain.augment.flip is False
    assert plain.pfl_length_weight == 0.0 and plain.select == "me"   # as every variant measured before the term


@pytest.mark.parametrize("spec,match", [("x:pflw", "malformed"), ("x:nope=1", "unknown"), ("x/y:lr=1", "NAME")])
def test_bad_specs_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_variant(spec)


def test_flip_takes_on_off_values_only(tmp_path):
    with pytest.raises(ValueError, match="on/off"):
        variant_config(_args(tmp_path), *parse_variant("x:flip=maybe"), seed=0)
