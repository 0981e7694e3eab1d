"""Finding and checking the shared library (each case in a fresh process:
a process must not load two copies of a Go runtime)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import hashevict


def run(code, **env):
    e = dict(os.environ)
    e.pop("HASHEVICT_LIBRARY", None)
    e.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env=e)


def test_override_that_does_not_exist_fails_loudly(tmp_path):
    missing = tmp_path / "nope" / "libhashevict.so"
    out = run(
        """
        import hashevict
        try:
            hashevict.version()
        except hashevict.LibraryNotFound as e:
            print("LNF", e)
        """,
        HASHEVICT_LIBRARY=str(missing),
    )
    assert out.returncode == 0, out.stderr
    assert "LNF cannot load libhashevict" in out.stdout and str(missing) in out.stdout
    assert "HASHEVICT_LIBRARY" in out.stdout


def test_override_used(tmp_path):
    lib = hashevict.library_path()
    copy = tmp_path / "libhashevict-copy.so"
    shutil.copyfile(lib, copy)
    out = run("import hashevict; print(hashevict.library_path()); print(hashevict.version())",
              HASHEVICT_LIBRARY=str(copy))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(copy), hashevict.version()]


def test_not_a_hashevict_library(tmp_path):
    libc = "libc.so.6"
    out = run(
        """
        import hashevict
        try:
            hashevict.library()
        except hashevict.LibraryNotFound as e:
            print(e)
        """,
        HASHEVICT_LIBRARY=libc,
    )
    assert "not a libhashevict" in out.stdout, out.stdout + out.stderr


def test_candidates_order(monkeypatch):
    from hashevict import _ffi

    monkeypatch.setenv("HASHEVICT_LIBRARY", "/x/libhashevict.so")
    c = _ffi.candidates()
    assert c[0] == ("$HASHEVICT_LIBRARY", "/x/libhashevict.so")
    assert c[1][0] == "package" and c[1][1].endswith(os.path.join("hashevict", "lib", "libhashevict.so"))
    assert [p for o, p in c if o == "system loader"] == list(_ffi.SONAMES)


def stub_library(tmp_path, defined):
    """A shared library with every symbol the bindings declare, each a stub
    returning 0, except those in `defined` (name -> C definition; None
    leaves the symbol out). Skips when there is no C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    from hashevict import _ffi

    stubs = ["#include <string.h>", "#include <stdint.h>"]
    stubs.append("typedef struct { uint32_t size; char rest[76]; } params;")
    for name in dict.fromkeys([*_ffi.FUNCTIONS, *defined]):
        if name in defined:
            if defined[name] is not None:
                stubs.append(defined[name])
        else:
            stubs.append(f"int {name}(void) {{ return 0; }}")
    src = tmp_path / "stub.c"
    src.write_text("\n".join(stubs))
    so = tmp_path / "libhashevict.so"
    subprocess.run([cc, "-shared", "-fPIC", str(src), "-o", str(so)], check=True)
    return so


def test_abi_mismatch_refused(tmp_path, header_text):
    """A library reporting another ABI version is refused by name."""
    so = stub_library(tmp_path, {
        "hashevict_abi_version": "int32_t hashevict_abi_version(void) { return 99; }",
        "hashevict_default_params_v2":
            "params hashevict_default_params_v2(void) { params p; memset(&p, 0, sizeof p); p.size = 80; return p; }",
    })
    out = run(
        """
        import hashevict
        try:
            hashevict.library()
        except hashevict.AbiMismatch as e:
            print(e)
        """,
        HASHEVICT_LIBRARY=str(so),
    )
    assert "ABI version 99" in out.stdout and "ABI version 1" in out.stdout, out.stdout + out.stderr


def test_library_before_0_5_refused_by_version(tmp_path):
    """A 0.4 library (no hashevict_default_params_v2) is named as too old,
    not called: its hashevict_params is smaller than the bindings'."""
    so = stub_library(tmp_path, {
        "hashevict_version": 'const char *hashevict_version(void) { return "0.4.0"; }',
        "hashevict_default_params":
            "params hashevict_default_params(void) { params p; memset(&p, 0, sizeof p); p.size = 80; return p; }",
        "hashevict_default_params_v2": None,
    })
    out = run(
        """
        import hashevict
        try:
            hashevict.library()
        except hashevict.LibraryNotFound as e:
            print(e)
        """,
        HASHEVICT_LIBRARY=str(so),
    )
    assert "libhashevict 0.4.0 predates 0.5.0" in out.stdout, out.stdout + out.stderr
