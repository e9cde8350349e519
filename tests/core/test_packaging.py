"""`pip install .` (not editable) gives a working headwater, headwater.plugins and the
`headwater` console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(45)
def test_a_non_editable_install_works_from_the_installed_files_alone(tmp_path):
    """Installing a copy of the source with `pip install --target` yields the packages
    `headwater`, `headwater.runtime` and `headwater.plugins` (mapped from core/ and
    plugins/), py.typed, the console script, and a flow that runs from those files."""
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("core", "plugins"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    target = tmp_path / "target"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=40)
    assert build.returncode == 0, build.stderr[-3000:]

    package = target / "headwater"
    assert (package / "py.typed").exists()
    assert (package / "plugins" / "run_naming.py").exists()
    assert (package / "runtime" / "__init__.py").exists()
    assert (package / "utilities" / "annotations.py").exists()
    assert not (target / "core").exists() and not (target / "tests").exists()
    script = target / "bin" / "headwater"
    assert script.exists() and "from headwater.cli import main" in script.read_text()

    # -S keeps the development checkout (an editable install) out of the way; the
    # dependencies come from this interpreter's site-packages, after the target.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update(PYTHONPATH=os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]]),
               HEADWATER_HOME=str(tmp_path / "home"), HEADWATER_DISABLE_PLUGIN_AUTOLOAD="1")
    code = (
        "import headwater, headwater.plugins, headwater.cli\n"
        "assert headwater.__file__.startswith(%r), headwater.__file__\n"
        "from headwater import flow, task\n"
        "@task\n"
        "def inc(x): return x + 1\n"
        "@flow\n"
        "def pipeline(): return inc(1)\n"
        "assert pipeline() == 2\n"
        "raise SystemExit(headwater.cli.main(['plugins', '--order', 'flow_run_name']))\n"
    ) % str(target)
    run = subprocess.run([sys.executable, "-S", "-c", code], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "run_naming" in run.stdout
