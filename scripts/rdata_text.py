#!/usr/bin/env python3
"""Extract a character vector from an installed R package's lazy-load data
database (data/Rdata.rdx + data/Rdata.rdb) and write it as plain text.

Used by scripts/fetch-deps.sh to get a long public-domain English prose text
(Jane Austen's novels, shipped by the Debian package r-cran-janeaustenr)
without installing R.

Only the subset of R's XDR serialization format needed for such data is
implemented: pairlists, symbols, CHARSXP, logical/integer/real/character
vectors, lists and attributes.

usage: rdata_text.py <pkg-data-dir> <object-name> <out.txt>
       rdata_text.py <pkg-data-dir> --list
"""
import bz2
import gzip
import lzma
import struct
import sys
import zlib

NILVALUE_SXP = 254
REFSXP = 255
SPECIAL_NO_PAYLOAD = {NILVALUE_SXP, 242, 241, 253, 252, 251, 247}  # nil/empty/base/global env, unbound, missing, base ns


class Reader:
    def __init__(self, buf):
        self.buf = buf
        self.pos = 0
        self.refs = []

    def int(self):
        (v,) = struct.unpack_from(">i", self.buf, self.pos)
        self.pos += 4
        return v

    def length(self):
        n = self.int()
        if n == -1:  # long vector: two 32-bit halves
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def header(self):
        fmt = self.buf[:2]
        if fmt != b"X\n":
            raise ValueError("only XDR serialization is supported, got %r" % fmt)
        self.pos = 2
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            n = self.int()
            self.pos += n  # native encoding name
        elif version != 2:
            raise ValueError("unsupported serialization version %d" % version)

    def item(self):
        flags = self.int()
        typ = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        if typ in SPECIAL_NO_PAYLOAD:
            return None
        if typ == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            return self.refs[idx - 1]
        if typ == 1:  # SYMSXP
            name = self.item()
            self.refs.append(name)
            return name
        if typ in (2, 6, 17, 239, 240):  # pairlist-like: LISTSXP, LANGSXP, DOTSXP, ATTRLIST, ATTRLANG
            out = []
            while True:
                attr = self.item() if has_attr else None
                tag = self.item() if has_tag else None
                car = self.item()
                out.append((tag, car))
                del attr
                flags = self.int()
                typ = flags & 0xFF
                has_attr = bool(flags & (1 << 9))
                has_tag = bool(flags & (1 << 10))
                if typ == NILVALUE_SXP:
                    return out
                if typ not in (2, 6, 17, 239, 240):
                    # CDR is not a pairlist cell: rewind and read it generically
                    self.pos -= 4
                    out.append((None, self.item()))
                    return out
        if typ == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            s = self.buf[self.pos:self.pos + n]
            self.pos += n
            return s.decode("utf-8", errors="replace")
        if typ in (10, 13):  # LGLSXP, INTSXP
            n = self.length()
            vals = list(struct.unpack_from(">%di" % n, self.buf, self.pos))
            self.pos += 4 * n
            value = vals
        elif typ == 14:  # REALSXP
            n = self.length()
            vals = list(struct.unpack_from(">%dd" % n, self.buf, self.pos))
            self.pos += 8 * n
            value = vals
        elif typ in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
            n = self.length()
            value = [self.item() for _ in range(n)]
        else:
            raise ValueError("unsupported SEXP type %d at offset %d" % (typ, self.pos - 4))
        if has_attr:
            attrs = self.item()
            if isinstance(attrs, list):
                names = dict(attrs).get("names")
                if names is not None and isinstance(value, list) and len(names) == len(value):
                    return dict(zip(names, value))
        return value


def unserialize(buf):
    r = Reader(buf)
    r.header()
    return r.item()


def load_index(data_dir):
    with open(data_dir + "/Rdata.rdx", "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    idx = unserialize(raw)
    return idx["variables"], int(idx["compressed"][0])


def load_object(data_dir, name):
    variables, compressed = load_index(data_dir)
    if name not in variables:
        raise KeyError("%s not in %s" % (name, sorted(variables)))
    off, n = variables[name]
    with open(data_dir + "/Rdata.rdb", "rb") as f:
        f.seek(off)
        blob = f.read(n)
    (outlen,) = struct.unpack_from(">I", blob, 0)
    if compressed == 1:
        data = zlib.decompress(blob[4:])
    else:
        kind = blob[4:5]
        body = blob[5:]
        if kind == b"Z":
            data = zlib.decompress(body)
        elif kind == b"2":
            data = bz2.decompress(body)
        elif kind == b"X":
            data = lzma.decompress(body)
        elif kind == b"0":
            data = body
        else:
            raise ValueError("unknown compression type %r" % kind)
    if len(data) != outlen:
        raise ValueError("decompressed length %d != recorded %d" % (len(data), outlen))
    return unserialize(data)


def main(argv):
    if len(argv) == 3 and argv[2] == "--list":
        variables, _ = load_index(argv[1])
        for k in sorted(variables):
            print(k)
        return 0
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    obj = load_object(argv[1], argv[2])
    if not isinstance(obj, list) or not all(isinstance(x, (str, type(None))) for x in obj):
        raise SystemExit("object %s is not a character vector" % argv[2])
    text = "\n".join("" if x is None else x for x in obj) + "\n"
    with open(argv[3], "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote %s: %d lines, %d characters" % (argv[3], len(obj), len(text)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
