"""Self-describing model checkpoints that load without executing pickled code.

A checkpoint is one uncompressed ``.npz`` (zip) archive of ``.npy`` members, read back with
``allow_pickle=False``, so a hostile file can at worst be refused, never run code (unlike
``torch.load``/``pickle``). Members:

* ``header``: uint8 array holding UTF-8 JSON::

      {"format": "invdyn-checkpoint", "format_version": 1,
       "kind": "lstm", "model_version": 1, "target": "full",
       "joint_names": [...], "rate_hz": 1000.0, "input_kind": "q_qd_qdd",
       "config": {"hidden_size": 64, "num_layers": 1, "dropout": 0.0},
       "normalisation": {"x_mean": [...], "x_std": [...], "y_mean": [...], "y_std": [...]},
       "dtype": "float32",
       "weights": {"lstm.weight_ih_l0": [256, 15], ...},
       "training": {"created": "...", "invdyn_version": "...", <caller's metadata>},
       "nominal": {...}}   (only for a residual target, see below)

  ``target`` is what the model learns (:mod:`invdyn_ros.core.targets`): ``'full'`` torque,
  ``'residual_rbd'`` or ``'residual_gravity'``; a residual target's header also holds
  ``nominal``, the :class:`~invdyn_ros.core.targets.NominalSpec` JSON (URDF text and its
  SHA-256, joint mapping, held joints, armature) of the model it was trained against, so the
  file alone rebuilds it. Files without ``target`` fields other than 'full' load as before.

* ``weight.<name>``: one float32/float64 array per model parameter (torch ``state_dict`` names),
  in the dtype named by the header; the normalisation lives in the header (JSON floats
  round-trip float64 exactly), so a loaded model reproduces the saved one bit for bit.

Kind ``'gp'`` (the Gaussian-process baseline, :mod:`invdyn_ros.core.gp`) uses the same layout:
``config`` holds :meth:`GpConfig.settings() <invdyn_ros.core.gp.GpConfig.settings>` (``kind``
'exact' or 'sparse', ``num_inducing``, ...), ``dtype`` is always ``float64``, and the weights
are the GPyTorch parameters by name, raw (unconstrained) values (``likelihood.*``, ``gp.*``:
hyperparameters, and for a sparse GP the inducing points and natural variational parameters),
plus for an exact GP its training data ``train_x`` (n, 3d) and ``train_y`` (n, d) in physical
units: everything to rebuild the same predictor from the file alone.

The loader checks everything before it builds a model: the archive, the header, the format and
version, the kind (dispatching on it: 'lstm' or 'gp'; a caller gets only the kind it asks
for), the architecture, every weight's name, dtype, shape and finiteness, and optionally the
joints and rate the caller expects. Joints with the same names in another order are refused
(the model is not permuted): callers map their data by name into the model's order, which
:func:`load_checkpoint` returns.

Every problem raises :class:`CheckpointError` naming the file (or the byte source).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
import glob
import io
import json
import math
import os
from pathlib import Path
import re
import tempfile
from typing import Any, Callable, Optional, Sequence, TYPE_CHECKING, Union
import zipfile
import zlib

import numpy as np

from invdyn_ros import __version__ as INVDYN_VERSION
from invdyn_ros.core.lstm_numpy import (as_lstm_weights, lstm_weight_shapes, LstmConfig,
                                        LstmWeights, Normalizer, WEIGHT_DTYPES)
from invdyn_ros.core.targets import spec_from_meta

if TYPE_CHECKING:  # torch is imported only by those who build torch models (not a predictor)
    import torch

FORMAT_NAME = 'invdyn-checkpoint'
FORMAT_VERSION = 1
#: Versions this loader reads.
SUPPORTED_FORMAT_VERSIONS = (1,)
HEADER_KEY = 'header'
WEIGHT_PREFIX = 'weight.'
NPY_SUFFIX = '.npy'
DEFAULT_TARGET = 'full'
DEFAULT_MODEL_VERSION = 1
#: Metadata key naming the trainer run that published a model (an id the trainer draws at its
#: start): model versions count within one run.
SESSION_KEY = 'trainer_session'
#: Model kinds the format knows of (all of them in _BUILDERS).
KNOWN_KINDS = ('lstm', 'gp')
#: The only weight dtype of kind 'gp' (GP factorisations need it; see invdyn_ros.core.gp).
GP_DTYPE = 'float64'
#: Refuse archives claiming more than this many uncompressed bytes (a zip bomb, not a model:
#: hidden 1024 x 4 layers in float64 is ~270 MB).
MAX_UNCOMPRESSED_BYTES = 1 << 30
#: Header JSON larger than this is not a header.
MAX_HEADER_BYTES = 16 << 20
#: Relative tolerance when comparing a caller's rate_hz with the trained one: the LSTM state
#: evolves per sample, so the rates must really agree; 1 % absorbs rounding of nominal rates.
RATE_REL_TOL = 0.01
#: Header keys a caller's metadata may not use (they are set from the model or by this module).
_RESERVED_META_KEYS = frozenset({
    'format', 'format_version', 'kind', 'joint_names', 'rate_hz', 'input_kind', 'config',
    'normalisation', 'dtype', 'weights', 'training', 'source'})
#: Header keys every format-1 header has.
_HEADER_KEYS = frozenset({
    'format', 'format_version', 'kind', 'model_version', 'target', 'joint_names', 'rate_hz',
    'input_kind', 'config', 'normalisation', 'dtype', 'weights', 'training'})
#: Header keys some headers have: the nominal model of a residual target.
_OPTIONAL_HEADER_KEYS = frozenset({'nominal'})

PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint cannot be written or is refused on load; the message names the file."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f'checkpoint {self.source}: {problem}')


# --------------------------------------------------------------------------------------------
# Writing


def supersedes(offered: tuple[int, str], in_use: tuple[int, str]) -> bool:
    """Whether an offered model, (model_version, trainer session), replaces the one in use.

    Versions order the models of one trainer run. A restarted trainer counts again from its
    start checkpoint's version, so a model of another run replaces the one in use whatever its
    version (without this, a respawned trainer's models were refused as stale until its count
    passed the old run's). A model without a session ('': a file, an older trainer) needs a
    higher version than the one in use.
    """
    version, session = offered
    in_use_version, in_use_session = in_use
    if session and session != in_use_session:
        return True
    return version > in_use_version


def session_of(meta: dict) -> str:
    """The trainer session of a model's metadata ('' when absent or not a string)."""
    session = meta.get(SESSION_KEY, '')
    return session if isinstance(session, str) else ''


def _json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays and paths in caller metadata JSON-serialisable."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f'{type(obj).__name__} is not JSON-serialisable')


def _model_kind(model: Any) -> str:
    if isinstance(model, LstmWeights):
        return 'lstm'
    # Imported here: whoever passes a torch model has torch loaded already.
    from invdyn_ros.core.lstm import LstmInverseDynamics
    if isinstance(model, LstmInverseDynamics):
        return 'lstm'
    # Imported here: gpytorch is only loaded by those who use GPs.
    from invdyn_ros.core.gp import GpInverseDynamics
    if isinstance(model, GpInverseDynamics):
        return 'gp'
    raise TypeError(f'cannot checkpoint a {type(model).__name__}; supported: '
                    'LstmInverseDynamics, LstmWeights, GpInverseDynamics')


def _lstm_header_and_weights(model: Any) -> tuple[dict, dict[str, np.ndarray]]:
    dtype = str(getattr(model, 'dtype', '')).replace('torch.', '')
    if not isinstance(model, LstmWeights) and dtype not in WEIGHT_DTYPES:
        raise TypeError(f'model dtype {dtype} not supported; use float32 or float64')
    try:
        lw = as_lstm_weights(model)
    except ValueError as exc:
        raise ValueError(f'refusing to save: {exc}') from exc
    cfg = lw.config
    dtype = lw.dtype
    weights = {name: np.asarray(w, dtype=dtype) for name, w in lw.weights.items()}
    header = {
        'joint_names': list(cfg.joint_names),
        'rate_hz': float(cfg.rate_hz),
        'input_kind': cfg.input_kind,
        'config': cfg.architecture(),
        'normalisation': lw.normalizer.to_dict(),
        'dtype': dtype,
    }
    return header, weights


def _gp_header_and_weights(model: Any) -> tuple[dict, dict[str, np.ndarray]]:
    if not model.is_fitted:
        raise ValueError('cannot checkpoint an unfitted GP model: call fit() first')
    cfg = model.config
    header = {
        'joint_names': list(cfg.joint_names),
        'rate_hz': float(cfg.rate_hz),
        'input_kind': cfg.input_kind,
        'config': cfg.settings(),
        'normalisation': model.normalizer.to_dict(),
        'dtype': GP_DTYPE,
    }
    return header, model.state_arrays()


#: kind -> function giving the kind-specific header fields and the named weight arrays.
_SERIALISERS: dict[str, Callable[[Any], tuple[dict, dict[str, np.ndarray]]]] = {
    'lstm': _lstm_header_and_weights,
    'gp': _gp_header_and_weights,
}


def checkpoint_to_bytes(model: Any, meta: Optional[dict] = None) -> bytes:
    """Serialise ``model`` with metadata ``meta`` into checkpoint bytes (an .npz archive).

    ``meta`` keys: ``target`` (one of :data:`~invdyn_ros.core.targets.TARGETS`, default
    'full'), ``nominal`` (a residual target's :meth:`NominalSpec.to_dict`; required for those,
    refused for 'full') and ``model_version`` (int >= 0, default 1) go to the header's top
    level; every other key (data sources, samples, epochs, scores, ...) is training metadata,
    stored under ``training`` with ``created`` (UTC ISO time) and ``invdyn_version`` filled in
    unless given. Values must be JSON-serialisable (numpy scalars,
    arrays and paths are converted). Raises TypeError/ValueError for an unusable model or meta.
    """
    meta = dict(meta or {})
    reserved = sorted(_RESERVED_META_KEYS & set(meta))
    if reserved:
        raise ValueError(f'meta keys {reserved} are reserved (set from the model)')
    target = meta.pop('target', DEFAULT_TARGET)
    nominal = meta.pop('nominal', None)
    model_version = meta.pop('model_version', DEFAULT_MODEL_VERSION)
    if not isinstance(target, str) or not target:
        raise ValueError(f'target must be a non-empty string, got {target!r}')
    # The target and its nominal model must agree (a residual without its model is useless).
    spec_from_meta({'target': target, 'nominal': nominal})
    if (isinstance(model_version, bool) or not isinstance(model_version, (int, np.integer))
            or model_version < 0):
        raise ValueError(f'model_version must be an integer >= 0, got {model_version!r}')
    meta.setdefault('created', datetime.now(timezone.utc).isoformat(timespec='seconds'))
    meta.setdefault('invdyn_version', INVDYN_VERSION)

    kind = _model_kind(model)
    body, weights = _SERIALISERS[kind](model)
    for name, w in weights.items():
        if not np.all(np.isfinite(w)):
            raise ValueError(f'weight {name} has NaN/inf values; refusing to save it')
    header = {'format': FORMAT_NAME, 'format_version': FORMAT_VERSION, 'kind': kind,
              'model_version': int(model_version), 'target': target, **body,
              'weights': {name: list(w.shape) for name, w in weights.items()},
              'training': meta}
    if nominal is not None:
        header['nominal'] = nominal
    header_json = json.dumps(header, default=_json_default, allow_nan=True, indent=1)
    arrays = {HEADER_KEY: np.frombuffer(header_json.encode('utf-8'), dtype=np.uint8)}
    arrays.update({WEIGHT_PREFIX + name: w for name, w in weights.items()})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _write_file(f: io.BufferedWriter, data: bytes) -> None:
    """Write all of ``data`` to ``f`` (a seam so tests can fail a write half-way)."""
    f.write(data)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; not every platform can open a folder, which is fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_prefix(path: Path, pid: int) -> str:
    """Temporary files of a save: hidden, named after the target and the saving process."""
    return f'.{path.name}.{pid}.'


def _remove_stale_temps(path: Path) -> None:
    """Delete temporary files that saves of ``path`` by processes no longer running left
    behind (a process killed mid-save cannot clean up); another live saver's are kept."""
    pattern = re.compile(re.escape(f'.{path.name}.') + r'(\d+)\..*\.tmp')
    for tmp in path.parent.glob(f'.{glob.escape(path.name)}.*.tmp'):
        m = pattern.fullmatch(tmp.name)
        if m is None:
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue                    # its saver is alive (or not ours to signal)
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError, ValueError):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()


def save_checkpoint(path: PathLike, model: Any, meta: Optional[dict] = None
                    ) -> Path:
    """Atomically write a checkpoint of ``model`` to ``path``; returns the path.

    The bytes are first decoded again with the full load-time validation; then written to a
    temporary file in the same folder, fsync'ed, read back and compared, and only then renamed
    over ``path`` (os.replace), so ``path`` is at any moment either the old file or the complete
    new one, and the temporary file is removed whatever fails (or, if the process is killed
    mid-save, by the next save of ``path``: temporary files are hidden, end in ``.tmp`` and
    carry the saver's pid). See :func:`checkpoint_to_bytes`
    for ``meta``. Raises CheckpointError if the folder is missing or the write fails.
    """
    path = Path(path)
    data = checkpoint_to_bytes(model, meta)
    # A checkpoint we write must be one we can load (numpy weights are checked without torch,
    # by the same checks).
    if isinstance(model, LstmWeights):
        lstm_weights_from_bytes(data, source=f'{path} (before write)')
    else:
        checkpoint_from_bytes(data, expect_kind=_model_kind(model),
                              source=f'{path} (before write)')
    folder = path.parent if str(path.parent) else Path('.')
    if not folder.is_dir():
        raise CheckpointError(str(path), f'folder {folder} does not exist')
    _remove_stale_temps(folder / path.name)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(path, os.getpid()),
                                        suffix='.tmp')
    except OSError as exc:
        raise CheckpointError(str(path), f'cannot create a file in {folder}: {exc}') from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, 'wb') as f:
            _write_file(f, data)
            f.flush()
            os.fsync(f.fileno())
        if tmp.read_bytes() != data:
            raise CheckpointError(str(path), f'read-back of {tmp} differs from what was written')
        # mkstemp makes the file owner-only; a model file is meant to be shared like any other.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise CheckpointError(str(path), f'write failed: {exc}') from exc
        raise
    _fsync_dir(folder)
    return path


# --------------------------------------------------------------------------------------------
# Reading


def _read_archive(data: bytes, source: str) -> dict[str, np.ndarray]:
    """The archive's members as arrays, refusing anything but a sound zip of plain .npy."""
    if not data:
        raise CheckpointError(source, 'empty file')
    if not data.startswith(b'PK'):
        if data.startswith(b'\x93NUMPY'):
            raise CheckpointError(source, 'is a single .npy array, not an .npz checkpoint')
        raise CheckpointError(source, 'not an .npz (zip) archive')
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            source, f'not a readable .npz (zip) archive; truncated or corrupt? ({exc})') from exc
    arrays: dict[str, np.ndarray] = {}
    with zf:
        infos = zf.infolist()
        total = sum(i.file_size for i in infos)
        if total > MAX_UNCOMPRESSED_BYTES:
            raise CheckpointError(
                source, f'archive claims {total} uncompressed bytes (limit '
                f'{MAX_UNCOMPRESSED_BYTES}); refused')
        # Names first, so a foreign archive (torch.save is a zip too) is named as such.
        names = [info.filename for info in infos]
        for name in names:
            if not name.endswith(NPY_SUFFIX):
                raise CheckpointError(
                    source, f'archive member {name!r} is not an .npy array (a torch.save or '
                    'other file? only invdyn .npz checkpoints are accepted)')
        if len(set(names)) != len(names):
            raise CheckpointError(source, 'duplicate archive members')
        for info in infos:
            name = info.filename
            key = name[:-len(NPY_SUFFIX)]
            try:
                raw = zf.read(info)  # checks the CRC: a flipped byte is caught here
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
                raise CheckpointError(
                    source, f'member {name!r} is truncated or corrupt ({exc})') from exc
            try:
                arr = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
            except ValueError as exc:
                if 'pickle' in str(exc).lower() or 'object' in str(exc).lower():
                    raise CheckpointError(
                        source, f'member {name!r} holds pickled Python objects; refused '
                        '(loading it could execute code)') from exc
                raise CheckpointError(
                    source, f'member {name!r} is not a valid .npy array ({exc})') from exc
            except Exception as exc:
                # A mangled .npy header fails in many ways (SyntaxError, EOFError, ...): all
                # mean the same thing here.
                raise CheckpointError(
                    source, f'member {name!r} is not a valid .npy array ({exc})') from exc
            if arr.dtype.hasobject:
                raise CheckpointError(source, f'member {name!r} holds Python objects; refused')
            arrays[key] = arr
    return arrays


def _parse_header(arrays: dict[str, np.ndarray], source: str) -> dict:
    if HEADER_KEY not in arrays:
        raise CheckpointError(source, f'no {HEADER_KEY!r} member: not an invdyn checkpoint')
    raw = arrays[HEADER_KEY]
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > MAX_HEADER_BYTES:
        raise CheckpointError(
            source, f'header must be a 1-D uint8 array of JSON text, got {raw.dtype} '
            f'{raw.shape}')
    try:
        header = json.loads(raw.tobytes().decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(source, f'header is not valid UTF-8 JSON ({exc})') from exc
    if not isinstance(header, dict):
        raise CheckpointError(source, 'header JSON is not an object')
    if header.get('format') != FORMAT_NAME:
        raise CheckpointError(
            source, f'format is {header.get("format")!r}, expected {FORMAT_NAME!r}')
    version = header.get('format_version')
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise CheckpointError(
            source, f'unsupported format version {version!r} (this invdyn reads '
            f'{list(SUPPORTED_FORMAT_VERSIONS)}; a newer invdyn wrote it?)')
    missing = sorted(_HEADER_KEYS - set(header))
    if missing:
        raise CheckpointError(source, f'header lacks {missing}')
    extra = sorted(set(header) - _HEADER_KEYS - _OPTIONAL_HEADER_KEYS)
    if extra:
        raise CheckpointError(source, f'header has unknown keys {extra}')
    _check_common_fields(header, source)
    return header


def _check_common_fields(header: dict, source: str) -> None:
    """Types of the kind-independent header fields, before anything relies on them."""
    names = header['joint_names']
    if (not isinstance(names, list) or not names
            or not all(isinstance(n, str) and n for n in names)):
        raise CheckpointError(source, f'joint_names must be a list of names, got {names!r}')
    rate = header['rate_hz']
    if (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate)
            or rate <= 0):
        raise CheckpointError(source, f'rate_hz must be a positive number, got {rate!r}')
    version = header['model_version']
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise CheckpointError(source, f'model_version must be an integer >= 0, got {version!r}')
    for key in ('kind', 'target', 'input_kind', 'dtype'):
        if not isinstance(header[key], str):
            raise CheckpointError(source, f'{key} must be a string, got {header[key]!r}')
    for key in ('config', 'normalisation', 'weights', 'training'):
        if not isinstance(header[key], dict):
            raise CheckpointError(source, f'{key} must be a JSON object')
    try:
        spec_from_meta(header)
    except ValueError as exc:
        raise CheckpointError(source, str(exc)) from exc


#: What a refused kind is, for the message (a GP file handed to the LSTM predictor, say).
_KIND_HINTS = {
    'gp': " (a Gaussian-process baseline checkpoint; load it with expect_kind='gp')",
    'lstm': " (an LSTM checkpoint; load it with expect_kind='lstm')",
}


def _check_kind(header: dict, expect_kind: Optional[str], source: str) -> str:
    kind = header['kind']
    if expect_kind is not None and kind != expect_kind:
        hint = _KIND_HINTS.get(kind, '')
        raise CheckpointError(
            source, f'holds a {kind!r} model, but a {expect_kind!r} model was asked for{hint}')
    if kind not in _BUILDERS:
        raise CheckpointError(
            source, f'unknown model kind {kind!r} (this invdyn loads {sorted(_BUILDERS)})')
    return kind


def _normalizer_from_header(header: dict, input_dim: int, output_dim: int, source: str
                            ) -> Normalizer:
    norm_dict = header['normalisation']
    norm_keys = {'x_mean', 'x_std', 'y_mean', 'y_std'}
    if set(norm_dict) != norm_keys:
        raise CheckpointError(source, f'normalisation must have exactly {sorted(norm_keys)}')
    try:
        normalizer = Normalizer(**{k: np.asarray(v, dtype=np.float64)
                                   for k, v in norm_dict.items()})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(source, f'invalid normalisation: {exc}') from exc
    if (normalizer.input_dim, normalizer.output_dim) != (input_dim, output_dim):
        raise CheckpointError(
            source, f'normalisation is for {normalizer.input_dim} inputs / '
            f'{normalizer.output_dim} outputs, config has {input_dim} / {output_dim}')
    return normalizer


def _stored_weights(arrays: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """The ``weight.*`` members by name (prefix removed); any other member is refused."""
    stored = {k[len(WEIGHT_PREFIX):]: v for k, v in arrays.items() if k.startswith(WEIGHT_PREFIX)}
    stray = sorted(k for k in arrays if k != HEADER_KEY and not k.startswith(WEIGHT_PREFIX))
    if stray:
        raise CheckpointError(source, f'unexpected archive members {stray}')
    return stored


def _check_manifest(header: dict, stored: dict[str, np.ndarray], source: str) -> None:
    manifest = header['weights']
    if {k: tuple(v) if isinstance(v, list) else v for k, v in manifest.items()} != {
            k: tuple(v.shape) for k, v in stored.items()}:
        raise CheckpointError(source, 'header weight manifest does not match the archive')


def _lstm_weights(header: dict, arrays: dict[str, np.ndarray], source: str) -> LstmWeights:
    """Validate an 'lstm' checkpoint's header and weights into :class:`LstmWeights` (no torch)."""
    arch = header['config']
    arch_keys = {'hidden_size', 'num_layers', 'dropout'}
    if set(arch) != arch_keys:
        raise CheckpointError(
            source, f'config keys {sorted(arch)} differ from {sorted(arch_keys)}')
    try:
        config = LstmConfig(joint_names=tuple(header['joint_names']), rate_hz=header['rate_hz'],
                            input_kind=header['input_kind'], **arch)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(source, f'invalid model configuration: {exc}') from exc
    normalizer = _normalizer_from_header(header, config.input_dim, config.output_dim, source)
    dtype = header['dtype']
    if dtype not in WEIGHT_DTYPES:
        raise CheckpointError(source, f'dtype {dtype!r} not one of {list(WEIGHT_DTYPES)}')
    expected = lstm_weight_shapes(config)
    stored = _stored_weights(arrays, source)
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise CheckpointError(
            source, f'weights do not match the configuration: missing {missing}, extra {extra}')
    _check_manifest(header, stored, source)
    weights = {}
    for name, shape in expected.items():
        w = stored[name]
        if w.shape != shape:
            raise CheckpointError(
                source, f'weight {name} has shape {w.shape}, the configuration '
                f'(hidden_size={config.hidden_size}, num_layers={config.num_layers}, '
                f'{config.dof} joints) needs {shape}')
        if w.dtype != np.dtype(dtype):
            raise CheckpointError(source, f'weight {name} is {w.dtype}, header says {dtype}')
        if not np.all(np.isfinite(w)):
            raise CheckpointError(source, f'weight {name} has NaN/inf values')
        weights[name] = np.ascontiguousarray(w)
    try:
        return LstmWeights(config, normalizer, weights, dtype)
    except ValueError as exc:
        raise CheckpointError(source, str(exc)) from exc


def _build_lstm(header: dict, arrays: dict[str, np.ndarray], source: str) -> 'torch.nn.Module':
    from invdyn_ros.core.lstm import LstmInverseDynamics
    return LstmInverseDynamics.from_weights(_lstm_weights(header, arrays, source))


def _build_gp(header: dict, arrays: dict[str, np.ndarray], source: str
              ) -> 'torch.nn.Module':
    from invdyn_ros.core.gp import GpConfig, GpInverseDynamics, SETTINGS_KEYS
    settings = header['config']
    if set(settings) != SETTINGS_KEYS:
        raise CheckpointError(
            source, f'config keys {sorted(settings)} differ from {sorted(SETTINGS_KEYS)} (the '
            "settings of a 'gp' model)")
    try:
        config = GpConfig(joint_names=tuple(header['joint_names']), rate_hz=header['rate_hz'],
                          input_kind=header['input_kind'], **settings)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(source, f'invalid model configuration: {exc}') from exc
    normalizer = _normalizer_from_header(header, config.input_dim, config.output_dim, source)
    if header['dtype'] != GP_DTYPE:
        raise CheckpointError(
            source, f"dtype {header['dtype']!r}: a 'gp' checkpoint is always {GP_DTYPE}")
    stored = _stored_weights(arrays, source)
    _check_manifest(header, stored, source)
    for name, w in stored.items():
        if w.dtype != np.dtype(GP_DTYPE):
            raise CheckpointError(source, f'weight {name} is {w.dtype}, header says {GP_DTYPE}')
        if not np.all(np.isfinite(w)):
            raise CheckpointError(source, f'weight {name} has NaN/inf values')
    try:
        return GpInverseDynamics.from_state(config, normalizer, stored)
    except ValueError as exc:
        raise CheckpointError(
            source, f'weights do not match the configuration: {exc}') from exc


#: kind -> function building the model from a validated header and the archive's arrays.
_BUILDERS: dict[str, Callable[[dict, dict[str, np.ndarray], str], Any]] = {
    'lstm': _build_lstm,
    'gp': _build_gp,
}


def _check_interface(header: dict, joint_names: Optional[Sequence[str]],
                     rate_hz: Optional[float], source: str) -> None:
    have = list(header['joint_names'])
    if joint_names is not None:
        if isinstance(joint_names, str):
            raise TypeError('joint_names must be a sequence of names, not a string')
        want = list(joint_names)
        if want != have:
            if sorted(want) == sorted(have):
                raise CheckpointError(
                    source, f'joint order differs: model has {have}, asked for {want}; the '
                    'model is not reordered, map your data by name into the model order')
            raise CheckpointError(
                source, f'joints differ: model has {have}, asked for {want} (missing '
                f'{sorted(set(want) - set(have))}, extra {sorted(set(have) - set(want))})')
    if rate_hz is not None:
        trained = float(header['rate_hz'])
        if not (math.isfinite(rate_hz) and rate_hz > 0
                and abs(rate_hz - trained) <= RATE_REL_TOL * trained):
            raise CheckpointError(
                source, f'rate mismatch: model trained at {trained:g} Hz, asked for {rate_hz:g} '
                f'Hz (tolerance {RATE_REL_TOL:.0%})')


def _meta_from_header(header: dict, source: str) -> dict:
    """The flat metadata returned by the loaders: training metadata plus interface fields."""
    meta = dict(header['training'])
    for key in ('format', 'format_version', 'kind', 'model_version', 'target', 'joint_names',
                'rate_hz', 'input_kind', 'config', 'dtype'):
        meta[key] = header[key]
    if 'nominal' in header:
        meta['nominal'] = header['nominal']
    meta['source'] = source
    return meta


def _decode(data: bytes, expect_kind: Optional[str], joint_names: Optional[Sequence[str]],
            rate_hz: Optional[float], source: str) -> tuple[dict, dict[str, np.ndarray], str]:
    """Archive, header, kind and interface checks shared by every loader."""
    if expect_kind is not None and expect_kind not in KNOWN_KINDS:
        raise ValueError(f'expect_kind {expect_kind!r} is not one of {list(KNOWN_KINDS)}')
    arrays = _read_archive(bytes(data), source)
    header = _parse_header(arrays, source)
    kind = _check_kind(header, expect_kind, source)
    _check_interface(header, joint_names, rate_hz, source)
    return header, arrays, kind


def checkpoint_from_bytes(data: bytes, *, expect_kind: Optional[str] = 'lstm',
                          joint_names: Optional[Sequence[str]] = None,
                          rate_hz: Optional[float] = None, source: str = '<bytes>'
                          ) -> tuple[Any, dict]:
    """Validate and load checkpoint bytes; see :func:`load_checkpoint` (``source`` names the
    origin, e.g. a topic, in error messages)."""
    header, arrays, kind = _decode(data, expect_kind, joint_names, rate_hz, source)
    model = _BUILDERS[kind](header, arrays, source)
    return model, _meta_from_header(header, source)


def lstm_weights_from_bytes(data: bytes, *, joint_names: Optional[Sequence[str]] = None,
                            rate_hz: Optional[float] = None, source: str = '<bytes>'
                            ) -> tuple[LstmWeights, dict]:
    """Like :func:`checkpoint_from_bytes` for an 'lstm' checkpoint, but returns the weights as
    numpy arrays (:class:`LstmWeights`) without importing torch: the real-time predictor's
    loader. Exactly the same checks and errors."""
    header, arrays, _ = _decode(data, 'lstm', joint_names, rate_hz, source)
    return _lstm_weights(header, arrays, source), _meta_from_header(header, source)


def _read_file(path: PathLike) -> tuple[bytes, str]:
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise CheckpointError(source, 'no such file')
    if not path.is_file():
        raise CheckpointError(source, 'not a regular file')
    try:
        return path.read_bytes(), source
    except OSError as exc:
        raise CheckpointError(source, f'cannot read: {exc}') from exc


def load_lstm_weights(path: PathLike, *, joint_names: Optional[Sequence[str]] = None,
                      rate_hz: Optional[float] = None) -> tuple[LstmWeights, dict]:
    """:func:`load_checkpoint` for the predictor: an 'lstm' checkpoint as :class:`LstmWeights`
    (numpy, torch never imported), with the same checks, errors and ``meta``."""
    data, source = _read_file(path)
    return lstm_weights_from_bytes(data, joint_names=joint_names, rate_hz=rate_hz,
                                   source=source)


def load_checkpoint(path: PathLike, *, expect_kind: Optional[str] = 'lstm',
                    joint_names: Optional[Sequence[str]] = None,
                    rate_hz: Optional[float] = None) -> tuple[Any, dict]:
    """Load a checkpoint written by :func:`save_checkpoint`, never unpickling anything.

    Args:
        path: the .npz file.
        expect_kind: the model kind the caller can use ('lstm', or 'gp' for a
            :class:`~invdyn_ros.core.gp.GpInverseDynamics`); another kind is refused, saying
            what the file holds. None accepts any kind this invdyn can load.
        joint_names: if given, the model's joints must be exactly these, in this order (the
            same joints in another order are refused, saying so; the model is not reordered).
        rate_hz: if given, must match the trained rate within :data:`RATE_REL_TOL`.

    Returns:
        (model in eval mode, meta): ``meta`` holds the caller's training metadata (including
        ``created`` and ``invdyn_version``) plus ``format``, ``format_version``, ``kind``,
        ``model_version``, ``target``, ``joint_names``, ``rate_hz``, ``input_kind``, ``config``,
        ``nominal`` (residual targets only: pass ``meta`` to
        :func:`~invdyn_ros.core.targets.spec_from_meta` for the spec),
        ``dtype`` and ``source`` (the path).

    Raises:
        CheckpointError: the file is missing, unreadable, not an invdyn .npz, truncated,
            corrupt, holds pickled objects, has an unknown format version or kind, weights
            missing/extra/misshapen/non-finite, or joints/rate differ from the ones asked for.
    """
    data, source = _read_file(path)
    return checkpoint_from_bytes(data, expect_kind=expect_kind, joint_names=joint_names,
                                 rate_hz=rate_hz, source=source)
