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


# --- DDS isolation --------------------------------------------------------------------------
# Set before anything imports rclpy: traffic stays on this machine, and each test run gets its
# own domain so concurrent runs (two checkouts, CI beside a session) cannot hear each other.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(REPO / 'config' / 'fastdds_localhost.xml')
os.environ['RMW_IMPLEMENTATION'] = 'rmw_fastrtps_cpp'
if 'INVDYN_TEST_DOMAIN_ID' in os.environ:
    os.environ['ROS_DOMAIN_ID'] = os.environ['INVDYN_TEST_DOMAIN_ID']
else:
    # 1..100: valid for Fast DDS's default port mapping; pid-derived so runs differ.
    os.environ['ROS_DOMAIN_ID'] = str(1 + (os.getpid() * 7919 + int.from_bytes(
        os.urandom(2), 'little')) % 100)
os.environ.setdefault('PYTHONPATH', str(REPO))
if str(REPO) not in os.environ['PYTHONPATH'].split(os.pathsep):
    os.environ['PYTHONPATH'] = str(REPO) + os.pathsep + os.environ['PYTHONPATH']
