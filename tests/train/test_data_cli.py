"""`ctd data show` on synthetic folders."""

from __future__ import annotations

import cv2
import pytest

from ctd_runtime.cli import main
from tests.train._data_synth import make_folder


@pytest.fixture
def data_dir(tmp_path):
    root, _ = make_folder(tmp_path / "data", n_images=5, n_subjects=2)
    return root


@pytest.mark.parametrize("extra", [[], ["--augment", "--schema", "imm58"]])
def test_show_writes_pngs(data_dir, tmp_path, capsys, extra):
    out = tmp_path / "show"
    main(["data", "show", str(data_dir), "--out", str(out), "--n", "3", "--seed", "1", *extra])
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3
    assert "wrote 3 PNGs" in capsys.readouterr().out
    for p in pngs:
        img = cv2.imread(str(p))
        assert img is not None and img.shape == (512, 640 + 8 + 512, 3)  # 200x160 source at 512 px high
    assert not list(out.glob(".*"))  # no temporary files left
    # the same seed picks the same images; n larger than the data is capped
    main(["data", "show", str(data_dir), "--out", str(tmp_path / "again"), "--n", "3", "--seed", "1", *extra])
    assert [p.name for p in sorted((tmp_path / "again").glob("*.png"))] == [p.name for p in pngs]
    main(["data", "show", str(data_dir), "--out", str(tmp_path / "all"), "--n", "50"])
    assert len(list((tmp_path / "all").glob("*.png"))) == 5


def test_show_bad_inputs(data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:
        main(["data", "show", str(data_dir), "--schema", "no-such-schema", "--out", str(tmp_path / "o")])
    assert ei.value.code != 0
    assert "unknown schema 'no-such-schema'" in capsys.readouterr().err
    afile = tmp_path / "file.png"
    afile.write_bytes(b"x")
    with pytest.raises(SystemExit) as ei:
        main(["data", "show", str(data_dir), "--out", str(afile)])
    assert ei.value.code == 2
    assert "not a folder" in capsys.readouterr().err
    assert afile.read_bytes() == b"x"
    with pytest.raises(SystemExit) as ei:
        main(["data", "show", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert ei.value.code == 2
    assert "data folder not found" in capsys.readouterr().err
    # a schema JSON file that needs a source point the data lacks
    (tmp_path / "big.json").write_text(
        '{"name": "big", "landmark_names": ["a", "b"], "source_indices": [0, 99], "pfl_pair": [0, 1]}'
    )
    with pytest.raises(SystemExit) as ei:
        main(["data", "show", str(data_dir), "--schema", str(tmp_path / "big.json"), "--out", str(tmp_path / "o")])
    assert ei.value.code == 2
    assert "needs source point 99" in capsys.readouterr().err
