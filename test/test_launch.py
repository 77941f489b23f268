"""The files around the node agree with what the node declares: launch file, params YAML, RViz config, docs table.

``launch`` and ``launch_ros`` are not installable here (docs: ros2-from-pip.md §7), so the launch file is parsed
with ``ast`` and never imported or run: **these tests check the file's content, not launch's substitution or event
logic.** The command line the launch file amounts to (console script, params file, ``-p``) runs in test_node.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from mesc3d_ros.reconstruct_node import INPUT_TOPICS, PARAMETERS, POINTS_TOPIC, ParamSpec

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILE = REPO / 'launch' / 'reconstruct.launch.py'
PARAMS_FILE = REPO / 'config' / 'reconstruct.yaml'
RVIZ_FILE = REPO / 'config' / 'mesc3d.rviz'
DOCS = REPO / 'docs' / 'node.md'
DECLARED = {spec.name: spec for spec in PARAMETERS}


def calls(tree: ast.AST, name: str) -> list[ast.Call]:
    """Every call of ``name(...)`` in the tree."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name) and node.func.id == name]


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def launch_tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def node_call(tree: ast.Module, executable: str) -> ast.Call:
    (call,) = [c for c in calls(tree, 'Node') if ast.literal_eval(keyword(c, 'executable')) == executable]
    return call


def test_every_launch_argument_is_described_and_every_use_is_declared():
    tree = launch_tree()
    declared = {}
    for call in calls(tree, 'DeclareLaunchArgument'):
        description = keyword(call, 'description')
        declared[ast.literal_eval(call.args[0])] = ast.literal_eval(description) if description else ''
    assert all(len(text) > 15 for text in declared.values()), declared
    used = {ast.literal_eval(call.args[0]) for call in calls(tree, 'LaunchConfiguration')}
    assert used == set(declared), f'used but not declared: {used - set(declared)}; unused: {set(declared) - used}'
    assert {'model', 'backend', 'image', 'detections', 'camera_info', 'depth', 'rviz', 'params_file'} <= set(declared)


def test_launch_starts_the_console_script_with_declared_parameters_and_real_topics():
    call = node_call(launch_tree(), 'reconstruct_node')
    assert ast.literal_eval(keyword(call, 'package')) == 'mesc3d_ros'
    (overrides,) = [item for item in keyword(call, 'parameters').elts if isinstance(item, ast.Dict)]
    names = {ast.literal_eval(key) for key in overrides.keys}
    yaml_keys = set(yaml.safe_load(PARAMS_FILE.read_text())['/**']['ros__parameters'])
    assert names <= set(DECLARED) and names <= yaml_keys, names
    remapped = {ast.literal_eval(pair.elts[0]) for pair in keyword(call, 'remappings').elts}
    assert remapped == set(INPUT_TOPICS)


def test_rviz_is_optional_and_opens_the_shipped_config_on_the_nodes_topics():
    call = node_call(launch_tree(), 'rviz2')
    condition = keyword(call, 'condition')
    assert ast.unparse(condition) == "IfCondition(LaunchConfiguration('rviz'))"
    assert "'mesc3d.rviz'" in ast.unparse(keyword(call, 'arguments'))
    displays = yaml.safe_load(RVIZ_FILE.read_text())['Visualization Manager']['Displays']
    clouds = [d for d in displays if d['Class'] == 'rviz_default_plugins/PointCloud2']
    assert [d['Topic']['Value'] for d in clouds] == [f'/{POINTS_TOPIC}']
    assert clouds[0]['Channel Name'] == 'object_index' and clouds[0]['Topic']['Reliability Policy'] == 'Reliable'
    assert any(d['Class'] == 'rviz_default_plugins/Image' for d in displays)


def test_params_yaml_holds_every_declared_parameter_at_its_default():
    values = yaml.safe_load(PARAMS_FILE.read_text())['/**']['ros__parameters']
    assert set(values) == set(DECLARED)
    for name, spec in DECLARED.items():
        expected = [] if spec.default is None else spec.default
        assert values[name] == expected and type(values[name]) is type(expected), (name, values[name], expected)


def parameter_table(specs: tuple[ParamSpec, ...]) -> str:
    """The Markdown table docs/node.md must contain, rendered from the node's declarations."""
    lines = ['| Parameter | Type | Default | Allowed | Description |', '|---|---|---|---|---|']
    for spec in specs:
        kind = 'string[]' if spec.default is None else type(spec.default).__name__
        if spec.default is None:
            default = '[]'
        elif isinstance(spec.default, bool):
            default = f'`{str(spec.default).lower()}`'  # as YAML writes it
        else:
            default = f'`{spec.default!r}`'.replace("'", '"')
        if spec.choices:
            allowed = ', '.join(f'`{choice}`' for choice in spec.choices)
        elif spec.value_range is not None:
            allowed = f'{spec.value_range[0]} … {spec.value_range[1]}'
        else:
            allowed = ''
        lines.append(f'| `{spec.name}` | {kind} | {default} | {allowed} | {spec.description} |')
    return '\n'.join(lines)


def test_docs_parameter_table_matches_the_declarations():
    table = parameter_table(PARAMETERS)
    assert table in DOCS.read_text(), f'docs/node.md §Parameters is out of date; replace its table with:\n{table}'
