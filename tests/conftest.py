"""Shared fixtures: where ../shared lives, and skips when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CTD_SHARED", REPO.parent / "shared"))
IMM_DIR = SHARED / "data" / "imm-face"
TEACHERS_DIR = SHARED / "teachers"


@pytest.fixture(scope="session")
def imm_dir() -> Path:
    if not (IMM_DIR / "annotations.csv").exists():
        pytest.skip(f"IMM data not found at {IMM_DIR}")
    return IMM_DIR


@pytest.fixture(scope="session")
def teachers_dir() -> Path:
    if not TEACHERS_DIR.exists():
        pytest.skip(f"teachers not found at {TEACHERS_DIR}")
    return TEACHERS_DIR
