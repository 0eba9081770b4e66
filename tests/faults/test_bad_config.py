"""Bad configuration files: every YAML we load goes through one bounded loader."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_LAUGHS = textwrap.dedent("""\
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
    """)

# Run in a child process: before the fix, rendering the expanded value in the error message
# takes hours and gigabytes, so the test bounds it and fails instead of hanging the suite.
_SCRIPT = """
import sys
from sap_ometria_assets.lib.{module} import {loader}, {error}
try:
    {loader}(sys.argv[1])
except {error} as exc:
    print("REFUSED", len(str(exc)), str(exc)[:300])
else:
    print("LOADED")
"""


@pytest.mark.parametrize("module,loader,error", [
    ("ometria.mapping", "load_mapping", "MappingError"),
    ("quality.checks_config", "load_checks_config", "ChecksConfigError"),
])
def test_a_billion_laughs_yaml_is_refused_quickly_with_a_short_message(tmp_path: Path, module,
                                                                       loader, error):
    path = tmp_path / "bad.yaml"
    path.write_text(_LAUGHS, encoding="utf-8")
    script = _SCRIPT.format(module=module, loader=loader, error=error)
    try:
        out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                             text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{loader} did not return within 120 s on a billion-laughs file")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("REFUSED"), out.stdout[:500]
    length = int(out.stdout.split()[1])
    assert length < 1000                      # the cause, not the expanded value
    assert str(path) in out.stdout and "alias" in out.stdout
    assert "lol" not in out.stdout


def test_an_oversized_mapping_file_is_refused_before_it_is_parsed(tmp_path: Path):
    from sap_ometria_assets.lib.ometria.mapping import MappingError, load_mapping

    path = tmp_path / "huge.yaml"
    path.write_text("x: [" + "1," * 2_000_000 + "1]\n", encoding="utf-8")
    with pytest.raises(MappingError, match="more than the .* allowed"):
        load_mapping(path)


def test_the_shipped_yaml_files_still_load():
    from sap_ometria_assets.lib.quality.checks_config import load_checks_config
    from sap_ometria_assets.lib.ometria.mapping import load_mapping

    root = Path(__file__).resolve().parents[2] / "data"
    assert load_mapping(root / "mapping.yaml").contacts
    assert load_checks_config(root / "checks.yaml") is not None
