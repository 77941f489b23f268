"""
package.xml is well-formed and a valid format-3 manifest, as ament_xmllint and rosdep/colcon read it.

ament_xmllint validates against the schema its ``<?xml-model href=...?>`` names (download.ros.org), which this
machine and CI cannot reach, and no offline copy of ``package_format3.xsd`` is packaged on PyPI or Debian. So the
test runs ``xmllint`` (Debian libxml2-utils) for well-formedness and encoding, and catkin_pkg's parser, which is
what colcon and rosdep use, for the format-3 rules (required tags, names, versions, dependency fields).
"""
from pathlib import Path
import shutil
import subprocess

import pytest
from catkin_pkg.package import InvalidPackage, parse_package

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.linter
@pytest.mark.xmllint
def test_package_xml_is_well_formed() -> None:
    if shutil.which('xmllint') is None:
        pytest.skip('xmllint missing: `make setup` installs Debian libxml2-utils')
    result = subprocess.run(['xmllint', '--noout', str(ROOT / 'package.xml')], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.linter
@pytest.mark.xmllint
def test_package_xml_is_a_valid_format_3_manifest() -> None:
    try:
        package = parse_package(str(ROOT / 'package.xml'))
    except InvalidPackage as exc:
        pytest.fail(f'package.xml: {exc}')
    assert package.package_format == 3
    assert package.name == 'mesc3d_ros'
    assert package.get_build_type() == 'ament_python'
