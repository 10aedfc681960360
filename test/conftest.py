"""Shared test fixtures: where the real robot data lives, and a skip when it is absent."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Real robot data from other labs, read in place (never copied into the repo).
SHARED_DATA = Path(os.environ.get('INVDYN_SHARED_DATA', REPO.parent / 'shared' / 'data'))


def shared_data(rel: str) -> Path:
    """Path of a shared data set; skips the calling test with the reason when it is absent."""
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f'shared robot data not found at {p} (set INVDYN_SHARED_DATA or place '
                    f'the data in ../shared/data)')
    return p
