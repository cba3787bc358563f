"""``relaxed-e3nn --version`` and ``--help`` import neither torch nor ase (CLI startup time).

Every subcommand module is imported to build the parser, so each must keep its heavy imports
inside its functions. The check reads ``sys.modules`` in a fresh interpreter rather than timing
the command, which would depend on the load of the machine.
"""
import json
import subprocess
import sys

import pytest

_HEAVY = ("torch", "e3nn", "ase", "pymatgen", "matplotlib", "scipy", "numpy")

_SCRIPT = """
import json, sys
from relaxed_e3nn.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted({{name.split('.')[0] for name in sys.modules}} & set({heavy!r}))
sys.stderr.write('HEAVY=' + json.dumps(heavy))
"""


def _heavy_modules_after(argv):
    script = _SCRIPT.format(argv=argv, heavy=_HEAVY)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    marker = done.stderr.rsplit("HEAVY=", 1)
    assert len(marker) == 2, done.stderr
    return done.stdout, json.loads(marker[1])


@pytest.mark.parametrize("argv", [["--version"], ["--help"]], ids=["version", "help"])
def test_version_and_help_import_no_heavy_module(argv):
    stdout, heavy = _heavy_modules_after(argv)
    assert heavy == [], f"relaxed-e3nn {' '.join(argv)} imported {heavy}"
    assert "relaxed-e3nn" in stdout


def test_python_dash_m_version_does_not_import_torch():
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "relaxed_e3nn", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("relaxed-e3nn ")
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "e3nn" not in imported


def test_package_import_is_light_and_save_load_still_resolve():
    script = ("import sys, relaxed_e3nn; light = 'torch' not in sys.modules; "
              "f = relaxed_e3nn.load; print(light, callable(f), callable(relaxed_e3nn.save))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "True", "True"], done.stderr
