"""The environment the README's commands build."""

import importlib.util
import subprocess
import sys


def test_torchvision_is_not_installed():
    assert importlib.util.find_spec("torchvision") is None, (
        "torchvision is installed: it pulls another torch and breaks `import diffusers`"
    )


def test_diffusers_and_kornia_import():
    import diffusers  # noqa: F401
    import kornia  # noqa: F401


def test_importing_dia_does_no_work():
    code = ("import sys, dia, dia.config, dia.results, dia.data, dia.metrics; "
            "sys.exit(any(m in sys.modules for m in ('diffusers', 'kornia', 'matplotlib')))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_python_m_dia_is_the_dia_command():
    out = subprocess.run([sys.executable, "-m", "dia", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "data" in out.stdout
