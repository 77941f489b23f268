"""
The files around the node agree with what the node declares: launch file, params YAML, RViz config, docs table.

The launch file is parsed with ``ast`` here, so these checks run without ``launch`` installed (a fresh clone);
test_ros_tools.py runs it with the real ``ros2 launch`` where the upstream sources are available.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from mesc3d_ros.node_params import PARAMETERS, ParamSpec
from mesc3d_ros.reconstruct_node import INPUT_TOPICS, POINTS_TOPIC

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


def constant(tree: ast.Module, name: str) -> object:
    """Return the literal value of a module-level ``NAME = <literal>`` in the launch file."""
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and any(isinstance(target, ast.Name) and target.id == name for target in node.targets)]
    return ast.literal_eval(value)


def declared_arguments(tree: ast.Module) -> dict[str, ast.expr | None]:
    return {ast.literal_eval(call.args[0]): keyword(call, 'description')
            for call in calls(tree, 'DeclareLaunchArgument')}


def test_every_launch_argument_is_described_and_every_use_is_declared():
    tree = launch_tree()
    declared = declared_arguments(tree)
    assert all(description is not None for description in declared.values()), declared
    literal_uses = {ast.literal_eval(call.args[0]) for call in calls(tree, 'LaunchConfiguration')
                    if isinstance(call.args[0], ast.Constant)}
    used = literal_uses | set(constant(tree, 'OVERRIDES')) | set(constant(tree, 'TOPICS'))
    assert used == set(declared), f'used but not declared: {used - set(declared)}; unused: {set(declared) - used}'
    assert {'model', 'backend', 'image', 'detections', 'camera_info', 'depth', 'rviz', 'params_file'} <= set(declared)


def test_launch_overrides_name_declared_parameters_and_remaps_every_input():
    tree = launch_tree()
    overrides = constant(tree, 'OVERRIDES')
    yaml_keys = set(yaml.safe_load(PARAMS_FILE.read_text())['/**']['ros__parameters'])
    assert set(overrides.values()) <= set(DECLARED) and set(overrides.values()) <= yaml_keys, overrides
    for argument in overrides:  # empty default = "not given": the params file keeps its value
        (call,) = [c for c in calls(tree, 'DeclareLaunchArgument') if ast.literal_eval(c.args[0]) == argument]
        assert ast.literal_eval(keyword(call, 'default_value')) == ''
    assert set(constant(tree, 'TOPICS')) == set(INPUT_TOPICS)


def test_rviz_is_optional_and_opens_the_shipped_config_on_the_nodes_topics():
    text = LAUNCH_FILE.read_text()
    assert "'mesc3d.rviz'" in text and '_rviz_installed()' in text
    assert '<exec_depend>rviz2</exec_depend>' not in (REPO / 'package.xml').read_text()
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
    """Return the Markdown table docs/node.md must contain, rendered from the node's declarations."""
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
