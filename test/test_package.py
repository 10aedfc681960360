"""The ament_python package: package.xml, colcon build, console scripts, `invdyn --help`."""

import os
from pathlib import Path
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SUBCOMMANDS = (['data', 'sim'], ['data', 'synthetic'], ['data', 'info'], ['data', 'convert'],
               ['train'], ['eval'], ['model', 'info'], ['up'], ['demo'], ['fuzz'])


def test_package_xml_format_3_with_dependencies():
    root = ET.parse(REPO / 'package.xml').getroot()
    assert root.get('format') == '3' and root.findtext('name') == 'invdyn'
    deps = {e.text for e in root if e.tag in ('exec_depend', 'depend', 'test_depend')}
    for key in ('rclpy', 'sensor_msgs', 'std_msgs', 'std_srvs', 'diagnostic_msgs', 'launch',
                'launch_ros', 'pinocchio', 'python3-numpy', 'python3-torch', 'python3-pytest'):
        assert key in deps, key
    assert root.find('export/build_type').text == 'ament_python'


def test_colcon_build_installs_scripts_launch_and_config(tmp_path):
    colcon = shutil.which('colcon') or str(Path(sys.executable).parent / 'colcon')
    if not Path(colcon).exists():
        pytest.skip('colcon not installed (pip install colcon-common-extensions)')
    ws = tmp_path / 'ws'
    (ws / 'src').mkdir(parents=True)
    # A copy, not a link: colcon writes build products beside setup.py otherwise.
    shutil.copytree(REPO, ws / 'src' / 'invdyn', ignore=shutil.ignore_patterns(
        '.venv', '.git', 'build', 'install', 'log', '*.egg-info', '__pycache__', 'demo_out',
        '*.so', '_fastpath.c', '_lstm_kernel.c'))
    r = subprocess.run([colcon, 'build', '--packages-select', 'invdyn'], cwd=ws,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    inst = ws / 'install' / 'invdyn'
    for script in ('invdyn', 'predictor', 'trainer', 'gp_baseline', 'lwr_sim'):
        assert (inst / 'lib' / 'invdyn' / script).is_file(), script
    share = inst / 'share' / 'invdyn'
    assert (share / 'launch' / 'predict.launch.py').is_file()
    for cfg in ('predictor', 'trainer', 'gp_baseline', 'lwr_sim'):
        assert (share / 'config' / f'{cfg}.yaml').is_file()
    assert (share / 'package.xml').is_file()
    assert list((share / 'models').glob('*.npz')), 'the default model is installed'
    # colcon builds the compiled kernels as well (Cython is in the environment).
    for kernel in ('_fastpath', '_lstm_kernel'):
        assert list(inst.rglob(f'{kernel}*.so')), f'{kernel} is built and installed'


@pytest.mark.parametrize('sub', SUBCOMMANDS, ids=lambda s: ' '.join(s))
def test_every_subcommand_has_help(sub):
    r = subprocess.run([sys.executable, '-m', 'invdyn_ros.cli', *sub, '--help'],
                       capture_output=True, text=True, timeout=60, cwd=REPO,
                       env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert r.returncode == 0, r.stderr
    assert 'usage: invdyn' in r.stdout


@pytest.mark.parametrize('argv,match', [
    (['train', '--data', 'nowhere', '--out', 'x.npz'], 'no such file or folder'),
    (['data', 'sim', '--out', 'x', '--seconds', '-1'], 'must be a positive'),
    (['eval', '--model', 'missing.npz', '--data', '.'], 'missing.npz'),
    (['up', 'predict', 'bogus:=1'], 'unknown launch argument'),
    (['fuzz', '--messages', '10'], 'must be more than 1000'),
    (['fuzz', '--torque-limits', '1,x'], 'not a number'),
    (['fuzz', '--model', 'missing.npz'], 'missing.npz: no such file'),
])
def test_bad_arguments_give_one_clear_line(argv, match, tmp_path):
    r = subprocess.run([sys.executable, '-m', 'invdyn_ros.cli', *argv], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path,
                       env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert r.returncode == 2
    assert match in r.stderr
    assert 'Traceback' not in r.stderr


@pytest.mark.parametrize('extra,match', [
    (['--lr', '1e30', '--optimizer', 'adam'], 'training diverged'),
    (['--kernel', 'gpu'], 'invalid choice'),
])
def test_train_errors_are_one_clear_line_and_write_no_model(extra, match, tmp_path):
    """A run that diverges stops before the step that would ruin the weights and writes no
    file; a bad --kernel is refused by the parser."""
    from invdyn_ros.core.datasets import save_npz
    from invdyn_ros.core.trajectory import Trajectory
    t = np.arange(400) / 100.0
    q = np.stack([np.sin(t), np.cos(0.7 * t)], axis=1)
    qd = np.stack([np.cos(t), -0.7 * np.sin(0.7 * t)], axis=1)
    save_npz(tmp_path / 'run.npz', Trajectory(q=q, qd=qd, tau=2.0 * q, t=t,
                                              joint_names=('a', 'b'), source='toy'))
    r = subprocess.run([sys.executable, '-m', 'invdyn_ros.cli', 'train', '--data', 'run.npz',
                        '--out', 'm.npz', '--epochs', '3', '--batch', '2', '--window', '20',
                        '--segment', '100', '--hidden', '4', '--val-fraction', '0', *extra],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert r.returncode == 2, r.stderr
    assert match in r.stderr and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path / 'm.npz').exists()
