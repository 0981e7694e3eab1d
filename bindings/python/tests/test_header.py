"""_ffi.py must mirror include/hashevict.h exactly.

The header is parsed with regular expressions (macros, enums, structs,
typedefs, prototypes) and every declaration is compared with the ctypes one:
names, values, field order and types, function names, return and argument
types. The C types are mapped to ctypes here, independently of _ffi.py.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from ctypes import POINTER

import pytest

import hashevict
from hashevict import _ffi

SCALARS = {
    "uint32_t": ctypes.c_uint32,
    "int32_t": ctypes.c_int32,
    "int64_t": ctypes.c_int64,
    "uint64_t": ctypes.c_uint64,
    "float": ctypes.c_float,
    "size_t": ctypes.c_size_t,
    "int": ctypes.c_int,
}


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


class Header:
    def __init__(self, text: str):
        self.raw = text
        self.defines = {}
        for m in re.finditer(r"^#define\s+(HASHEVICT_\w+)[ \t]+([^\n]*?)\s*(?:/\*.*)?$", text, re.M):
            self.defines[m.group(1)] = m.group(2).strip()
        body = strip_comments(text)
        body = re.sub(r"^\s*#[^\n]*$", " ", body, flags=re.M)
        body = body.replace('extern "C" {', " ")
        self.enums = {}
        for m in re.finditer(r"typedef\s+enum\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", body, re.S):
            assert m.group(1) == m.group(3)
            self.enums[m.group(1)] = {
                e.group(1): int(e.group(2), 0) for e in re.finditer(r"(\w+)\s*=\s*(-?\w+)", m.group(2))
            }
        self.structs = {}
        for m in re.finditer(r"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", body, re.S):
            assert m.group(1) == m.group(3)
            fields = []
            for decl in m.group(2).split(";"):
                decl = " ".join(decl.split())
                if not decl:
                    continue
                fm = re.fullmatch(r"(.*?[\s\*])(\w+)", decl)
                fields.append((fm.group(2), norm_type(fm.group(1))))
            self.structs[m.group(1)] = fields
        self.opaque = re.findall(r"typedef\s+struct\s+(\w+)\s+(\w+)\s*;", body)
        self.typedefs = dict(
            (m.group(2), norm_type(m.group(1)))
            for m in re.finditer(r"typedef\s+((?:unsigned\s+)?\w+)\s+(\w+)\s*;", body)
            if m.group(1) not in ("struct", "enum")
        )
        rest = re.sub(r"typedef\s+(enum|struct)\s+\w+\s*\{.*?\}\s*\w+\s*;", " ", body, flags=re.S)
        rest = re.sub(r"typedef[^;]*;", " ", rest)
        self.functions = {}
        for m in re.finditer(r"([A-Za-z_][\w\s\*]*?)\b(hashevict_\w+)\s*\(([^)]*)\)\s*;", rest):
            args = [] if m.group(3).strip() in ("", "void") else [split_param(a) for a in m.group(3).split(",")]
            self.functions[m.group(2)] = (norm_type(m.group(1)), args)


def norm_type(t: str) -> str:
    t = " ".join(t.replace("*", " * ").split())
    return t.replace("* *", "**")


def split_param(p: str):
    p = " ".join(p.split())
    m = re.fullmatch(r"(.*?[\s\*])(\w+)", p)
    return norm_type(m.group(1)), m.group(2)


@pytest.fixture(scope="module")
def header(header_text):
    return Header(header_text)


def to_ctypes(ctype: str, header: Header, *, restype=False):
    """The ctypes type a C type must be declared as."""
    words = ctype.replace("*", " * ").split()
    stars = words.count("*")
    base = " ".join(w for w in words if w not in ("*", "const"))
    if base in header.typedefs:
        base = header.typedefs[base]
    if base == "void":
        return None if stars == 0 else (ctypes.c_void_p if stars == 1 else POINTER(ctypes.c_void_p))
    if base == "char" and stars == 1:
        return ctypes.c_char_p
    if base in SCALARS:
        t = SCALARS[base]
    elif base in header.structs or any(base == name for name, _ in header.opaque):
        t = getattr(_ffi, base)  # a struct of that exact name must exist
    elif base in header.enums:
        t = ctypes.c_int
    else:
        raise AssertionError(f"unmapped C type {ctype!r}")
    for _ in range(stars):
        t = POINTER(t)
    return t


def test_header_parsed(header):
    # Guard the parser itself: the header's shape as of ABI 1.
    assert len(header.functions) >= 20
    assert set(header.structs) == {"hashevict_params", "hashevict_tensor", "hashevict_stats"}
    assert ("hashevict_engine", "hashevict_engine") in header.opaque
    assert len(header.enums) == 8


def test_defines_match(header):
    assert header.defines, "no #define HASHEVICT_* parsed"
    for name, value in header.defines.items():
        if name == "HASHEVICT_H":  # include guard
            continue
        assert hasattr(_ffi, name), f"_ffi lacks {name}"
        want = value[1:-1] if value.startswith('"') else int(value, 0)
        assert getattr(_ffi, name) == want, f"{name}: header {value}, _ffi {getattr(_ffi, name)!r}"
    ours = {n for n in dir(_ffi) if n.startswith("HASHEVICT_") and not any(n in e for e in header.enums.values())}
    assert ours - set(header.defines) == set(), "constants in _ffi that the header does not define"


def test_status_values_and_exceptions(header):
    statuses = {n: int(v) for n, v in header.defines.items() if n == "HASHEVICT_OK" or n.startswith("HASHEVICT_ERR_")}
    assert {"HASHEVICT_OK", "HASHEVICT_ERR_INTERNAL"} <= set(statuses) and len(statuses) >= 16
    for name, value in statuses.items():
        assert getattr(_ffi, name) == value
        if value:
            cls = hashevict.errors.STATUS_CLASSES[value]
            assert cls.status == value and issubclass(cls, hashevict.HashevictError)
    assert set(hashevict.errors.STATUS_CLASSES) == {v for v in statuses.values() if v}


def test_enums_match(header):
    assert set(_ffi.ENUMS) == set(header.enums)
    for name, members in header.enums.items():
        assert list(_ffi.ENUMS[name].items()) == list(members.items()), name
        for member, value in members.items():
            assert getattr(_ffi, member) == value, member


def test_typedefs(header):
    assert header.typedefs["hashevict_status"] == "int32_t"
    assert _ffi.hashevict_status is ctypes.c_int32


def test_structs_match(header):
    for name, fields in header.structs.items():
        cls = getattr(_ffi, name)
        assert issubclass(cls, ctypes.Structure)
        got = [(f[0], f[1]) for f in cls._fields_]
        want = [(fname, to_ctypes(ftype, header)) for fname, ftype in fields]
        # enum-typed fields are declared int32_t in the header itself
        assert got == want, f"{name}: _ffi {got} != header {want}"


def test_opaque_handle(header):
    assert issubclass(_ffi.hashevict_engine, ctypes.Structure)
    assert _ffi.hashevict_engine._fields_ == []
    assert _ffi.hashevict_engine_p is POINTER(_ffi.hashevict_engine)


def test_functions_match(header):
    assert set(_ffi.FUNCTIONS) == set(header.functions), (
        f"only in header: {set(header.functions) - set(_ffi.FUNCTIONS)}; "
        f"only in _ffi: {set(_ffi.FUNCTIONS) - set(header.functions)}"
    )
    for name, (ret, args) in header.functions.items():
        restype, argtypes = _ffi.FUNCTIONS[name]
        assert restype == to_ctypes(ret, header, restype=True), f"{name} returns {ret}"
        want = [to_ctypes(t, header) for t, _ in args]
        assert list(argtypes) == want, f"{name}({', '.join(t for t, _ in args)}): _ffi has {argtypes}"


def test_loaded_library_declared(lib):
    assert lib._hashevict_missing <= set(_ffi.ADDED_IN)
    for name, (restype, argtypes) in _ffi.FUNCTIONS.items():
        if name in lib._hashevict_missing:
            continue
        fn = getattr(lib, name)
        assert fn.restype == restype and list(fn.argtypes) == list(argtypes), name


def test_sizes_match_library(lib):
    assert lib.hashevict_default_params_v2().size == ctypes.sizeof(_ffi.hashevict_params) == 88
    assert ctypes.sizeof(_ffi.hashevict_stats) == 48
    assert ctypes.sizeof(_ffi.hashevict_tensor) == 64


def test_layout_matches_c_compiler(header_text, tmp_path):
    """offsetof/sizeof of every field as a C compiler lays the header out."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    hdr = tmp_path / "hashevict.h"
    hdr.write_text(header_text)
    h = Header(header_text)
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "hashevict.h"', "int main(void) {"]
    for s, fields in h.structs.items():
        lines.append(f'printf("{s} %zu\\n", sizeof({s}));')
        for f, _ in fields:
            lines.append(f'printf("{s}.{f} %zu\\n", offsetof({s}, {f}));')
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, "-I", str(tmp_path), str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        key, value = line.split()
        if "." in key:
            s, f = key.split(".")
            assert getattr(getattr(_ffi, s), f).offset == int(value), key
        else:
            assert ctypes.sizeof(getattr(_ffi, key)) == int(value), key
