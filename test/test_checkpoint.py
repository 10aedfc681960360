"""Tests for the pickle-free, self-describing checkpoint format."""

import io
import json
import os
from pathlib import Path
import pickle
from typing import Callable, Optional
import zipfile

import numpy as np
import pytest
import torch

from invdyn_ros import __version__ as INVDYN_VERSION
from invdyn_ros.core import checkpoint as ckpt
from invdyn_ros.core.checkpoint import (
    CheckpointError, checkpoint_from_bytes, checkpoint_to_bytes, load_checkpoint,
    save_checkpoint)
from invdyn_ros.core.lstm import LstmConfig, LstmInverseDynamics, Normalizer
from invdyn_ros.core.targets import NominalSpec

JOINTS = ('shoulder', 'elbow', 'wrist')
RATE_HZ = 500.0
META = {'data_sources': ['run1.csv', 'run2.csv'], 'samples': np.int64(12000), 'epochs': 40,
        'scores': {'val_nmse': np.float32(0.125), 'per_joint': np.array([0.1, 0.2, 0.3])},
        'model_version': 7}


class _Hostile:
    """Unpickling this calls open(marker, 'w'): it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, 'w'))


def _model(num_layers: int = 2, dtype: torch.dtype = torch.float32, seed: int = 0
           ) -> LstmInverseDynamics:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = LstmConfig(JOINTS, RATE_HZ, hidden_size=16, num_layers=num_layers)
    x = rng.normal(size=(200, 9)) * np.repeat([1.0, 3.0, 20.0], 3) + 0.3
    y = rng.normal(size=(200, 3)) * 5.0 - 1.0
    return LstmInverseDynamics(cfg, Normalizer.from_data(x, y)).to(dtype).eval()


def _inputs(n: int = 100, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 9)) * 2.0


def _outputs(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        tau, _ = model(torch.as_tensor(x, dtype=model.dtype)[None])
    return tau.numpy()


def _unpack(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        arrays = {n[:-4]: np.lib.format.read_array(io.BytesIO(zf.read(n)))
                  for n in zf.namelist()}
    header = json.loads(arrays.pop('header').tobytes().decode('utf-8'))
    return header, arrays


def _repack(header: dict, arrays: dict[str, np.ndarray], manifest: bool = True) -> bytes:
    """Re-encode a (modified) checkpoint; by default the weight manifest follows the arrays, so
    a test reaches the check it is aimed at."""
    if manifest:
        header['weights'] = {k[len('weight.'):]: list(v.shape) for k, v in arrays.items()
                             if k.startswith('weight.')}
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


def _tamper(edit: Callable[[dict, dict], None], model: Optional[LstmInverseDynamics] = None,
            manifest: bool = True) -> bytes:
    header, arrays = _unpack(checkpoint_to_bytes(model or _model(), META))
    edit(header, arrays)
    return _repack(header, arrays, manifest)


def _refused(data: bytes, fragment: str, **kwargs) -> CheckpointError:
    with pytest.raises(CheckpointError) as err:
        checkpoint_from_bytes(data, source='test-src', **kwargs)
    assert fragment in str(err.value), str(err.value)
    assert 'test-src' in str(err.value)
    return err.value


# -- Round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_file_round_trip_is_exact(tmp_path: Path, dtype: torch.dtype) -> None:
    model = _model(dtype=dtype)
    path = save_checkpoint(tmp_path / 'model.npz', model, META)
    assert path == tmp_path / 'model.npz'
    loaded, meta = load_checkpoint(path, joint_names=JOINTS, rate_hz=RATE_HZ)
    assert isinstance(loaded, LstmInverseDynamics) and not loaded.training
    assert loaded.dtype == dtype
    assert loaded.config == model.config
    x = _inputs()
    np.testing.assert_array_equal(_outputs(loaded, x), _outputs(model, x))
    for name, value in model.state_dict().items():  # normaliser buffers included
        assert torch.equal(loaded.state_dict()[name], value), name
    assert meta['model_version'] == 7 and meta['target'] == 'full' and meta['kind'] == 'lstm'
    assert meta['joint_names'] == list(JOINTS) and meta['rate_hz'] == RATE_HZ
    assert meta['input_kind'] == 'q_qd_qdd' and meta['format_version'] == 1
    assert meta['config'] == {'hidden_size': 16, 'num_layers': 2, 'dropout': 0.0}
    assert meta['samples'] == 12000 and meta['epochs'] == 40
    assert meta['scores'] == {'val_nmse': 0.125, 'per_joint': [0.1, 0.2, 0.3]}
    assert meta['data_sources'] == ['run1.csv', 'run2.csv']
    assert meta['invdyn_version'] == INVDYN_VERSION and meta['created'].startswith('20')
    assert meta['source'] == str(path)


def test_bytes_round_trip() -> None:
    model = _model(num_layers=1)
    # A residual target carries its nominal model's spec (URDF text, joints), stored whole.
    nominal = NominalSpec(urdf_text='<robot name="r"/>', joint_names=JOINTS,
                          urdf_joints=JOINTS).to_dict()
    data = checkpoint_to_bytes(model, {'target': 'residual_gravity', 'nominal': nominal,
                                       'epochs': 3})
    assert isinstance(data, bytes)
    loaded, meta = checkpoint_from_bytes(data, joint_names=list(JOINTS))
    x = _inputs()
    np.testing.assert_array_equal(_outputs(loaded, x), _outputs(model, x))
    assert meta['target'] == 'residual_gravity' and meta['model_version'] == 1
    assert meta['nominal'] == nominal
    assert meta['source'] == '<bytes>'
    # A bytearray / memoryview (e.g. from a ROS uint8[] field) works the same.
    loaded2, _ = checkpoint_from_bytes(bytearray(data))
    np.testing.assert_array_equal(_outputs(loaded2, x), _outputs(model, x))


def test_layout_is_plain_npz_with_json_header() -> None:
    model = _model(num_layers=1)
    data = checkpoint_to_bytes(model, META)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = sorted(zf.namelist())
    assert names == sorted(['header.npy'] + [f'weight.{n}.npy' for n, _ in
                                             model.named_parameters()])
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        header = json.loads(npz['header'].tobytes())
        assert npz['weight.head.weight'].dtype == np.float32
    assert header['format'] == 'invdyn-checkpoint' and header['kind'] == 'lstm'
    assert header['weights']['lstm.weight_ih_l0'] == [64, 9]
    assert header['normalisation']['x_std'] == model.normalizer.x_std.tolist()
    assert header['training']['epochs'] == 40
    assert 'model_version' not in header['training']


def test_save_refuses_bad_model_or_meta(tmp_path: Path) -> None:
    model = _model()
    with pytest.raises(ValueError, match='reserved'):
        checkpoint_to_bytes(model, {'joint_names': ['a']})
    with pytest.raises(ValueError, match='model_version must be an integer'):
        checkpoint_to_bytes(model, {'model_version': 1.5})
    with pytest.raises(TypeError, match='not JSON-serialisable'):
        checkpoint_to_bytes(model, {'thing': object()})
    with pytest.raises(TypeError, match='cannot checkpoint a Linear'):
        checkpoint_to_bytes(torch.nn.Linear(2, 2), {})
    with torch.no_grad():
        model.head.bias[0] = float('nan')
    with pytest.raises(ValueError, match='NaN/inf'):
        save_checkpoint(tmp_path / 'm.npz', model, {})
    assert list(tmp_path.iterdir()) == []


# -- Atomic saving -----------------------------------------------------------------------------

def test_save_overwrites_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / 'model.npz'
    save_checkpoint(path, _model(seed=0), {'model_version': 1})
    save_checkpoint(path, _model(seed=1), {'model_version': 2})
    assert [p.name for p in tmp_path.iterdir()] == ['model.npz']
    _, meta = load_checkpoint(path)
    assert meta['model_version'] == 2
    assert (path.stat().st_mode & 0o777) == 0o644


@pytest.mark.parametrize('where', ['mid_write', 'fsync', 'replace'])
def test_failed_save_keeps_old_file_and_no_temp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    path = tmp_path / 'model.npz'
    save_checkpoint(path, _model(seed=0), {'model_version': 1})
    old = path.read_bytes()

    def half_write(f: io.BufferedWriter, data: bytes) -> None:
        f.write(data[:len(data) // 2])
        raise OSError('disk full')

    def fail(*args, **kwargs) -> None:
        raise OSError('simulated failure')

    if where == 'mid_write':
        monkeypatch.setattr(ckpt, '_write_file', half_write)
    elif where == 'fsync':
        monkeypatch.setattr(ckpt.os, 'fsync', fail)
    else:
        monkeypatch.setattr(ckpt.os, 'replace', fail)
    with pytest.raises(CheckpointError, match='write failed'):
        save_checkpoint(path, _model(seed=1), {'model_version': 2})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ['model.npz']
    assert path.read_bytes() == old
    assert load_checkpoint(path)[1]['model_version'] == 1


def test_failed_first_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    def half_write(f: io.BufferedWriter, data: bytes) -> None:
        f.write(data[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, '_write_file', half_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / 'model.npz', _model(), {})
    assert list(tmp_path.iterdir()) == []


def test_save_into_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match='does not exist'):
        save_checkpoint(tmp_path / 'nope' / 'model.npz', _model(), {})


# -- Refusals: files ---------------------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / 'absent.npz'
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert 'no such file' in str(err.value) and str(path) in str(err.value)
    with pytest.raises(CheckpointError, match='not a regular file'):
        load_checkpoint(tmp_path)


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / 'model.npz'
    path.write_text('hidden_size: 64\n')
    with pytest.raises(CheckpointError, match='not an .npz') as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    path.write_bytes(b'')
    with pytest.raises(CheckpointError, match='empty file'):
        load_checkpoint(path)
    np.save(path.with_suffix('.npy'), np.zeros(3))
    with pytest.raises(CheckpointError, match='single .npy array'):
        load_checkpoint(path.with_suffix('.npy'))


@pytest.mark.parametrize('keep', [0.9, 0.5, 0.1])
def test_truncated(keep: float) -> None:
    data = checkpoint_to_bytes(_model(), META)
    _refused(data[:int(len(data) * keep)], 'truncated or corrupt')


def test_corrupt_weight_bytes_fail_the_crc() -> None:
    data = bytearray(checkpoint_to_bytes(_model(), META))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo('weight.lstm.weight_hh_l1.npy')
    # Local file header is 30 bytes + name + extra; flip a byte well inside the array data.
    offset = info.header_offset + 30 + len(info.filename) + 200
    data[offset] ^= 0xFF
    _refused(bytes(data), 'truncated or corrupt')


def test_foreign_zip_member_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as zf:
        zf.writestr('header.npy', b'')
        zf.writestr('archive/data.pkl', b'')
    _refused(buf.getvalue(), "member 'archive/data.pkl' is not an .npy array")


def test_not_an_invdyn_npz() -> None:
    buf = io.BytesIO()
    np.savez(buf, a=np.zeros(3))
    _refused(buf.getvalue(), "no 'header' member")


# -- Refusals: hostile pickles never run -------------------------------------------------------

def test_hostile_payload_really_is_hostile(tmp_path: Path) -> None:
    """Sanity check of the test payload: plain unpickling does create the marker."""
    marker = tmp_path / 'proof'
    pickle.loads(pickle.dumps(_Hostile(marker)))
    assert marker.exists()


def _hostile_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    files = {}
    arr = np.empty(1, dtype=object)
    arr[0] = _Hostile(marker)
    files['npy_object'] = tmp_path / 'obj.npy'
    np.save(files['npy_object'], arr, allow_pickle=True)
    files['npz_object'] = tmp_path / 'obj.npz'
    header, arrays = _unpack(checkpoint_to_bytes(_model(), META))
    arrays['weight.head.bias'] = arr
    files['npz_object'].write_bytes(_repack(header, arrays, manifest=False))
    files['torch_save'] = tmp_path / 'model.pt'
    torch.save({'state': _Hostile(marker)}, files['torch_save'])
    files['raw_pickle'] = tmp_path / 'model.pkl'
    files['raw_pickle'].write_bytes(pickle.dumps(_Hostile(marker)))
    return files


@pytest.mark.parametrize('kind, fragment', [
    ('npy_object', 'single .npy array'),
    ('npz_object', 'pickled Python objects'),
    ('torch_save', 'is not an .npy array'),
    ('raw_pickle', 'not an .npz'),
])
@pytest.mark.parametrize('loader', ['load_checkpoint', 'load_lstm_weights'])
def test_hostile_pickle_refused_without_running(tmp_path: Path, kind: str, fragment: str,
                                                loader: str) -> None:
    # load_lstm_weights is the torch-free loader the predictor node uses.
    marker = tmp_path / 'pwned'
    path = _hostile_files(tmp_path, marker)[kind]
    assert not marker.exists()
    with pytest.raises(CheckpointError) as err:
        getattr(ckpt, loader)(path)
    assert fragment in str(err.value), str(err.value)
    assert str(path) in str(err.value)
    assert not marker.exists()


# -- Refusals: header --------------------------------------------------------------------------

def test_unknown_format_version() -> None:
    data = _tamper(lambda h, a: h.update(format_version=2))
    _refused(data, 'unsupported format version 2')


def test_wrong_format_name() -> None:
    _refused(_tamper(lambda h, a: h.update(format='other')), "format is 'other'")


def test_header_not_json() -> None:
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(b'{not json', dtype=np.uint8))
    _refused(buf.getvalue(), 'not valid UTF-8 JSON')


def test_header_missing_and_extra_keys() -> None:
    _refused(_tamper(lambda h, a: h.pop('rate_hz')), "header lacks ['rate_hz']")
    _refused(_tamper(lambda h, a: h.update(surprise=1)), "unknown keys ['surprise']")


def test_kind_dispatch() -> None:
    gp = _tamper(lambda h, a: h.update(kind='gp'))
    _refused(gp, "holds a 'gp' model, but a 'lstm' model was asked for")
    # An LSTM file relabelled 'gp' is refused by the GP builder: its settings are not a GP's.
    _refused(gp, "(the settings of a 'gp' model)", expect_kind=None)
    _refused(_tamper(lambda h, a: h.update(kind='svm')), "unknown model kind 'svm'",
             expect_kind=None)
    data = checkpoint_to_bytes(_model(), META)
    _refused(data, "holds a 'lstm' model, but a 'gp' model was asked for", expect_kind='gp')
    model, _ = checkpoint_from_bytes(data, expect_kind=None)
    assert isinstance(model, LstmInverseDynamics)
    with pytest.raises(ValueError, match='expect_kind'):
        checkpoint_from_bytes(data, expect_kind='transformer')


def test_invalid_config_and_normalisation() -> None:
    _refused(_tamper(lambda h, a: h['config'].update(hidden_size=0)),
             'invalid model configuration: hidden_size must be a positive integer')
    _refused(_tamper(lambda h, a: h['config'].update(bias=True)), 'config keys')
    _refused(_tamper(lambda h, a: h['normalisation']['x_std'].__setitem__(0, 0.0)),
             'invalid normalisation')
    _refused(_tamper(lambda h, a: h['normalisation']['y_mean'].append(0.0)),
             'invalid normalisation')
    _refused(_tamper(lambda h, a: h.update(joint_names='abc')), 'joint_names must be a list')
    _refused(_tamper(lambda h, a: h.update(rate_hz=-1)), 'rate_hz must be a positive number')


# -- Refusals: weights -------------------------------------------------------------------------

def test_missing_weight() -> None:
    data = _tamper(lambda h, a: a.pop('weight.lstm.bias_hh_l1'))
    _refused(data, "missing ['lstm.bias_hh_l1'], extra []")


def test_extra_weight() -> None:
    data = _tamper(lambda h, a: a.update({'weight.lstm.weight_ih_l2': np.zeros((64, 16),
                                                                               np.float32)}))
    _refused(data, "missing [], extra ['lstm.weight_ih_l2']")


def test_stray_member() -> None:
    _refused(_tamper(lambda h, a: a.update(notes=np.zeros(2))), "unexpected archive members")


def test_weight_shape_does_not_match_config() -> None:
    # Weights of a hidden-16 model under a header claiming hidden 32.
    data = _tamper(lambda h, a: h['config'].update(hidden_size=32))
    _refused(data, 'needs (128, 9)')
    _refused(data, 'hidden_size=32')


def test_manifest_mismatch() -> None:
    data = _tamper(lambda h, a: h['weights'].update({'head.bias': [4]}), manifest=False)
    _refused(data, 'manifest does not match')


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_non_finite_weight(bad: float) -> None:
    def edit(h: dict, a: dict) -> None:
        a['weight.lstm.weight_hh_l0'][3, 4] = bad
    _refused(_tamper(edit), 'weight lstm.weight_hh_l0 has NaN/inf values')


def test_weight_dtype_mismatch() -> None:
    def edit(h: dict, a: dict) -> None:
        a['weight.head.bias'] = a['weight.head.bias'].astype(np.float64)
    _refused(_tamper(edit), 'weight head.bias is float64, header says float32')
    _refused(_tamper(lambda h, a: h.update(dtype='float16')), "dtype 'float16'")


# -- Refusals: interface -----------------------------------------------------------------------

def test_joint_names_checked(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / 'm.npz', _model(), META)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, joint_names=['shoulder', 'elbow', 'gripper'])
    msg = str(err.value)
    assert 'joints differ' in msg and "missing ['gripper']" in msg and "extra ['wrist']" in msg
    assert str(path) in msg
    with pytest.raises(CheckpointError, match='joint order differs'):
        load_checkpoint(path, joint_names=['elbow', 'shoulder', 'wrist'])
    with pytest.raises(CheckpointError, match='joints differ'):
        load_checkpoint(path, joint_names=['shoulder', 'elbow'])
    model, _ = load_checkpoint(path, joint_names=('shoulder', 'elbow', 'wrist'))
    assert model.config.joint_names == JOINTS


def test_rate_checked() -> None:
    data = checkpoint_to_bytes(_model(), META)
    _refused(data, 'rate mismatch: model trained at 500 Hz, asked for 1000 Hz', rate_hz=1000.0)
    checkpoint_from_bytes(data, rate_hz=RATE_HZ * 1.004)  # nominal-rate rounding is fine
    _refused(data, 'rate mismatch', rate_hz=float('nan'))


def test_load_does_not_touch_directory(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / 'm.npz', _model(), META)
    before = sorted(os.listdir(tmp_path))
    load_checkpoint(path)
    assert sorted(os.listdir(tmp_path)) == before


# -- A saver killed with SIGKILL ---------------------------------------------------------------

KILLED_SAVER = '''
import os, sys, time
import numpy as np
from invdyn_ros.core import checkpoint as ckpt
from invdyn_ros.core.lstm_numpy import (LstmConfig, LstmWeights, Normalizer,
                                        lstm_weight_shapes)
path, version, stop_at = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cfg = LstmConfig(('a', 'b', 'c'), 500.0, hidden_size=256, num_layers=2)  # ~4 MB per file
rng = np.random.default_rng(version)
norm = Normalizer(np.zeros(9), np.ones(9), np.zeros(3), np.ones(3))
model = LstmWeights(cfg, norm, {k: rng.normal(size=s).astype(np.float32)
                                for k, s in lstm_weight_shapes(cfg).items()})


def hold(where):
    print(where, flush=True)        # the parent kills us now
    time.sleep(60)


real_write, real_replace = ckpt._write_file, os.replace
if stop_at == 'mid_write':          # half the bytes in the temporary file
    def _write(f, data):
        real_write(f, data[:len(data) // 2])
        f.flush()
        hold('mid_write')
    ckpt._write_file = _write
elif stop_at == 'before_rename':    # complete temporary file, not renamed yet
    def _replace(a, b):
        hold('before_rename')
    ckpt.os.replace = _replace
elif stop_at == 'after_rename':     # renamed, folder not fsync'ed yet
    ckpt._fsync_dir = lambda folder: hold('after_rename')
while True:                         # save, save, save, ... until killed
    version += 1
    ckpt.save_checkpoint(path, model, {'model_version': version})
    print(version, flush=True)
'''


def test_saver_killed_mid_save_leaves_a_complete_file(tmp_path: Path) -> None:
    """SIGKILL a saving process mid-write, before and after the rename, and at random moments:
    the file is always a complete checkpoint (the old or the new one), a loader never meets a
    partial file, and the temporary file of a killed save is removed by the next save."""
    import signal
    import subprocess
    import sys
    import time
    path = tmp_path / 'model.npz'
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    rng = np.random.default_rng(3)
    version = 0
    stray = 0
    for stop_at in ('none', 'mid_write', 'before_rename', 'after_rename', 'none', 'none',
                    'none', 'none'):
        p = subprocess.Popen([sys.executable, '-c', KILLED_SAVER, str(path), str(version),
                              stop_at], stdout=subprocess.PIPE, text=True, env=env)
        first = p.stdout.readline().strip()
        if stop_at == 'none':
            assert first == str(version + 1), first
            time.sleep(rng.uniform(0.0, 0.2))    # somewhere in the next saves
        else:
            assert first == stop_at, first
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate(timeout=30)
        _, meta = load_checkpoint(path)          # complete, valid, loadable
        done = [int(v) for v in (first + ' ' + out).split() if v.isdigit()]
        if stop_at in ('mid_write', 'before_rename'):
            assert meta['model_version'] == version, 'the old file, untouched'
        elif stop_at == 'after_rename':
            assert meta['model_version'] == version + 1, 'the new file, complete'
        else:       # the last announced save, or one renamed just before the kill
            assert meta['model_version'] in (done[-1], done[-1] + 1), (meta, done)
        version = meta['model_version']
        others = [q.name for q in tmp_path.iterdir() if q != path]
        # Whatever a killed save left is hidden and not an .npz: no loader picks it up.
        assert all(n.startswith('.model.npz.') and n.endswith('.tmp') for n in others), others
        assert [q.name for q in tmp_path.glob('*.npz')] == ['model.npz']
        if stop_at in ('mid_write', 'before_rename'):
            assert len(others) == 1
        stray += len(others)
    assert stray >= 2
    save_checkpoint(path, _model(), {'model_version': version + 1})   # the next save cleans up
    assert [q.name for q in tmp_path.iterdir()] == ['model.npz']
    assert load_checkpoint(path)[1]['model_version'] == version + 1


def test_a_model_supersedes_by_version_within_a_trainer_run_and_across_runs_always():
    from invdyn_ros.core.checkpoint import session_of, SESSION_KEY, supersedes
    assert supersedes((3, 'a'), (2, 'a')) and not supersedes((2, 'a'), (2, 'a'))
    assert not supersedes((1, 'a'), (2, 'a'))
    # A restarted trainer (another run) counts again from its start checkpoint's version.
    assert supersedes((2, 'b'), (40, 'a')) and supersedes((2, 'b'), (40, ''))
    # Without a run id (a file, an older trainer): only a newer version.
    assert supersedes((41, ''), (40, 'a')) and not supersedes((40, ''), (40, 'a'))
    assert not supersedes((1, ''), (1, ''))
    assert session_of({SESSION_KEY: 'abc'}) == 'abc'
    assert session_of({}) == '' and session_of({SESSION_KEY: 5}) == ''
    # The id travels in the checkpoint like any other metadata.
    _, meta = checkpoint_from_bytes(checkpoint_to_bytes(_model(), {SESSION_KEY: 'run-7'}))
    assert session_of(meta) == 'run-7'
