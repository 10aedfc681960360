"""The launch file and `invdyn up` describe the same processes; configs match the parameters.

``launch`` and ``launch_ros`` are not installable here, so the launch file is evaluated against
recording stand-ins of exactly the API it uses; the recorded description must equal
invdyn_ros.graph's. On a ROS machine the same file runs under the real API.
"""

from dataclasses import fields
import importlib.util
from pathlib import Path
import sys
import types

import pytest
import yaml

from invdyn_ros.core.params import (GpBaselineParams, LwrSimParams, PredictorParams,
                                    TrainerParams)
from invdyn_ros.graph import (GRAPHS, node_commands, parse_launch_args)

REPO = Path(__file__).resolve().parents[1]


class _Rec:
    """Records its constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _fake_launch_modules():
    names = {
        'launch': ['LaunchDescription'],
        'launch.actions': ['DeclareLaunchArgument'],
        'launch.conditions': ['IfCondition'],
        'launch.substitutions': ['LaunchConfiguration', 'PathJoinSubstitution'],
        'launch_ros': [],
        'launch_ros.actions': ['Node'],
        'launch_ros.substitutions': ['FindPackageShare'],
    }
    mods = {}
    for mod, classes in names.items():
        m = types.ModuleType(mod)
        for c in classes:
            setattr(m, c, type(c, (_Rec,), {}))
        mods[mod] = m
    return mods


def _describe(launch_file: Path, monkeypatch):
    for name, mod in _fake_launch_modules().items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location('launch_under_test', launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    entities = ld.args[0]

    def arg_name(sub):
        assert type(sub).__name__ == 'LaunchConfiguration', sub
        return sub.args[0]

    args, nodes = {}, []
    for e in entities:
        kind = type(e).__name__
        if kind == 'DeclareLaunchArgument':
            args[e.args[0]] = (e.kwargs['default_value'], e.kwargs['description'])
        elif kind == 'Node':
            k = e.kwargs
            assert k['package'] == 'invdyn'
            files, overrides = [], []
            for prm in k['parameters']:
                if isinstance(prm, dict):
                    overrides += [(key, arg_name(v)) for key, v in prm.items()]
                else:
                    parts = prm.args[0]
                    assert type(parts[0]).__name__ == 'PathJoinSubstitution'
                    assert type(parts[0].args[0][0]).__name__ == 'FindPackageShare'
                    assert parts[0].args[0][0].args[0] == 'invdyn'
                    assert parts[0].args[0][1] == 'config'
                    files.append(parts[1])
            cond = k.get('condition')
            nodes.append({
                'executable': k['executable'], 'name': k['name'], 'params_file': files[0],
                'overrides': tuple(overrides),
                'remappings': tuple((a, arg_name(b)) for a, b in k.get('remappings', [])),
                'condition': None if cond is None else arg_name(cond.args[0])})
        else:
            raise AssertionError(f'unexpected launch entity {kind}')
    return args, nodes


@pytest.mark.parametrize('graph', sorted(GRAPHS))
def test_launch_file_and_runner_describe_the_same_graph(graph, monkeypatch):
    args, nodes = _describe(REPO / 'launch' / f'{graph}.launch.py', monkeypatch)
    want_args, want_nodes = GRAPHS[graph]
    assert args == want_args
    assert nodes == [dict(executable=n.executable, name=n.name, params_file=n.params_file,
                          overrides=n.overrides, remappings=n.remappings,
                          condition=n.condition) for n in want_nodes]
    for a in args.values():
        assert a[1], 'every launch argument has a description'


def test_runner_commands_follow_the_arguments():
    values = parse_launch_args('predict', ['sim:=true', 'model:=/m.npz',
                                           'joint_states:=/lbr/joint_states'])
    procs = {p.spec.name: p.argv for p in node_commands('predict', values)}
    assert set(procs) == {'lwr_sim', 'predictor'}
    argv = procs['predictor']
    assert argv[1:3] == ['-m', 'invdyn_ros.nodes.predictor']
    assert "model_path:='/m.npz'" in argv and '/joint_states:=/lbr/joint_states' in argv
    assert Path(argv[argv.index('--params-file') + 1]).is_file()
    with pytest.raises(ValueError, match='unknown launch argument'):
        parse_launch_args('predict', ['simulate:=true'])
    with pytest.raises(ValueError, match='true or false'):
        parse_launch_args('predict', ['trainer:=maybe'])


@pytest.mark.parametrize('node,cls', [('predictor', PredictorParams), ('trainer', TrainerParams),
                                      ('gp_baseline', GpBaselineParams),
                                      ('lwr_sim', LwrSimParams)])
def test_yaml_matches_the_declared_parameters(node, cls):
    path = REPO / 'config' / f'{node}.yaml'
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == [f'/**/{node}']
    params = doc[f'/**/{node}']['ros__parameters']
    assert params == cls.defaults()
    cls.from_dict(params)       # the shipped values validate
    # Every parameter line has a comment line above it (units and meaning).
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith('    ') and not line.strip().startswith('#'):
            assert lines[i - 1].strip().startswith('#'), f'{path}:{i + 1} has no comment'
    for f in fields(cls):
        assert f.metadata.get('description'), f'{cls.__name__}.{f.name} has no description'


def test_setup_installs_launch_config_and_entry_points():
    text = (REPO / 'setup.py').read_text()
    for node in ('predictor', 'trainer', 'gp_baseline', 'lwr_sim'):
        assert f"'{node} = invdyn_ros.nodes.{node}:main'" in text
    assert "glob('launch/*.launch.py')" in text and "glob('config/*.yaml')" in text
