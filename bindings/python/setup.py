"""Build step of the hashevict Python package.

``build_py`` puts libhashevict.so (and a copy of include/hashevict.h) into
the package, from the first of:

1. ``$HASHEVICT_LIB_PREBUILT``: the path of an already built .so, copied
   (``make test-python`` passes the library ``make build`` made);
2. ``cmake/build-lib.sh``, the project's one recipe for the library (the
   CMake build runs the same script), in the hashevict source tree, found as
   ``$HASHEVICT_SOURCE_DIR``, else ``_gosrc/`` (the copy an sdist carries),
   else the nearest directory above this file holding the hashevict go.mod
   (``bindings/python/../..`` in a checkout: pip builds local directories in
   place). It needs a POSIX shell, Go with cgo and a C compiler; not CMake.

``$HASHEVICT_GO`` names the go binary (default: ``go`` on PATH).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.command.sdist import sdist as _sdist

HERE = Path(__file__).resolve().parent
MODULE = "module github.com/hashevict/hashevict"
# What an sdist carries to build the library: the Go packages the library is
# made of (cuda/ once it exists) and the recipe.
GO_PARTS = ("go.mod", "go.sum", "capi", "policy", "simd", "cuda", "include", "cmake/build-lib.sh")
RECIPE = Path("cmake") / "build-lib.sh"
LIB_NAME = "libhashevict.so"


def _is_source_root(path: Path) -> bool:
    mod = path / "go.mod"
    try:
        return (path / "capi").is_dir() and mod.is_file() and MODULE in mod.read_text()
    except OSError:
        return False


def find_source_root() -> Path | None:
    env = os.environ.get("HASHEVICT_SOURCE_DIR")
    if env:
        root = Path(env).resolve()
        if not _is_source_root(root):
            raise SystemExit(f"HASHEVICT_SOURCE_DIR={env} is not the hashevict source tree (no go.mod of {MODULE!r} and capi/)")
        return root
    if _is_source_root(HERE / "_gosrc"):
        return HERE / "_gosrc"
    for parent in HERE.parents:
        if _is_source_root(parent):
            return parent
    return None


def _log(msg: str) -> None:
    print(f"hashevict build: {msg}", file=sys.stderr, flush=True)


def build_library(dest_dir: Path) -> None:
    """Writes dest_dir/libhashevict.so and, when the sources are at hand,
    dest_dir/../include/hashevict.h."""
    dest_dir = dest_dir.resolve()  # go runs in the source tree, not here
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / LIB_NAME
    root = None
    prebuilt = os.environ.get("HASHEVICT_LIB_PREBUILT")
    if prebuilt:
        src = Path(prebuilt).resolve()
        if not src.is_file():
            raise SystemExit(f"HASHEVICT_LIB_PREBUILT={prebuilt} is not a file")
        _log(f"copying {src} -> {dest}")
        shutil.copyfile(src, dest)
        try:
            root = find_source_root()
        except SystemExit:
            root = None
    else:
        root = find_source_root()
        if root is None:
            raise SystemExit(
                "hashevict build: cannot find the hashevict Go sources (go.mod, capi/) above "
                f"{HERE}. Build from the repository (pip install ./bindings/python), or set "
                "HASHEVICT_SOURCE_DIR to the repository root, or HASHEVICT_LIB_PREBUILT to a "
                "built libhashevict.so."
            )
        go = os.environ.get("HASHEVICT_GO") or shutil.which("go")
        if not go:
            raise SystemExit(
                "hashevict build: the Go toolchain is needed to build libhashevict.so (go not on "
                "PATH); install Go, set HASHEVICT_GO, or set HASHEVICT_LIB_PREBUILT to a built library."
            )
        if not (root / RECIPE).is_file():
            raise SystemExit(f"hashevict build: {root / RECIPE} is missing; the source tree is incomplete")
        env = dict(os.environ, GO=go)
        with tempfile.TemporaryDirectory(prefix="hashevict-lib-") as tmp:
            cmd = ["sh", str(root / RECIPE), tmp]
            _log(f"in {root}: GO={go} {' '.join(cmd)}")
            try:
                subprocess.run(cmd, cwd=root, env=env, check=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise SystemExit(f"hashevict build: {RECIPE} failed in {root}: {exc} (see the output above)") from None
            # One file under the plain name: a wheel cannot hold the
            # SONAME symlinks, and the loader opens the package's copy by path.
            shutil.copyfile(Path(tmp) / LIB_NAME, dest)
    if root is not None and (root / "include" / "hashevict.h").is_file():
        inc = dest_dir.parent / "include"
        inc.mkdir(exist_ok=True)
        shutil.copyfile(root / "include" / "hashevict.h", inc / "hashevict.h")


class build_py(_build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            target = HERE / "src" / "hashevict" / "lib"
        else:
            target = Path(self.build_lib) / "hashevict" / "lib"
        build_library(target)

    def get_outputs(self, include_bytecode=True):
        outs = list(super().get_outputs(include_bytecode))
        base = Path(self.build_lib) / "hashevict"
        outs.append(str(base / "lib" / LIB_NAME))
        return outs


class sdist(_sdist):
    """Ships the Go sources in _gosrc/ so that an sdist builds on its own."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        root = find_source_root()
        if root is None:
            _log("warning: Go sources not found; this sdist needs HASHEVICT_SOURCE_DIR or HASHEVICT_LIB_PREBUILT to build")
            return
        dst = Path(base_dir) / "_gosrc"
        for part in GO_PARTS:
            src = root / part
            if src.is_dir():
                shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("*_test.go", "testdata"))
            elif src.is_file():
                (dst / part).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst / part)
        # LICENSE is a link to the repository's; an archive needs the file.
        lic = Path(base_dir) / "LICENSE"
        if lic.is_symlink():
            text = lic.read_bytes()
            lic.unlink()
            lic.write_bytes(text)


class BinaryDistribution(Distribution):
    """Holds a native library: the wheel is platform-specific (platlib)."""

    def has_ext_modules(self):
        return True


cmdclass = {"build_py": build_py, "sdist": sdist}

try:  # setuptools >= 70.1 carries bdist_wheel itself
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:  # pragma: no cover - older setuptools
    try:
        from wheel.bdist_wheel import bdist_wheel as _bdist_wheel
    except ImportError:
        _bdist_wheel = None

if _bdist_wheel is not None:

    class bdist_wheel(_bdist_wheel):
        """The wheel holds a native library but no Python extension: it is
        platform-specific yet works with any CPython 3 (py3-none-<platform>)."""

        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = bdist_wheel

setup(cmdclass=cmdclass, distclass=BinaryDistribution)
