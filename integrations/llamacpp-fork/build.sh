#!/usr/bin/env bash
# build.sh — build llama.cpp (CPU) from the source scripts/fetch-deps.sh fetched,
# either as released ("stock") or with hashevict's per-head KV placer patch ("fork").
#
#   build.sh stock  OUT_DIR            libllama + ggml only (the reference for tests)
#   build.sh fork   OUT_DIR HASHEVICT_BUILD_DIR
#                                      libllama, llama-server, llama-cli with --kv-evict
#
# The source is copied (git archive) to OUT_DIR/src, never modified in .cache.
# Only the targets named below are built: a whole CPU build of every tool is
# roughly twice as long. Reconfiguring and rebuilding is incremental.
set -euo pipefail

variant="${1:?usage: build.sh stock|fork OUT_DIR [HASHEVICT_BUILD_DIR]}"
out="${2:?OUT_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${HASHEVICT_CACHE:-$repo/.cache}"
src_git="$cache/llama.cpp"
[ -d "$src_git/.git" ] || { echo "build.sh: $src_git missing; run make deps" >&2; exit 1; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"
jobs="${JOBS:-2}"

# A fresh copy whenever the fetched commit or the patch changed; the stamp
# records both so that an unchanged tree keeps its objects (no rebuild).
commit="$(git -C "$src_git" rev-parse HEAD)"
stamp="$commit"
if [ "$variant" = fork ]; then
    stamp="$commit $(cat "$here/llama.cpp.patch" "$here"/glue/* | sha256sum | cut -c1-16)"
fi
if [ "$(cat "$out/src.stamp" 2>/dev/null || true)" != "$stamp" ]; then
    # Extract into a temp dir, then copy only the files whose contents differ,
    # so that ninja rebuilds only what a changed patch touches.
    tmp="$out/src.new"
    rm -rf "$tmp"; mkdir -p "$tmp"
    git -C "$src_git" archive --format=tar "$commit" | tar -x -C "$tmp"
    if [ "$variant" = fork ]; then
        (cd "$tmp" && patch -p1 --quiet --forward < "$here/llama.cpp.patch")
        cp "$here"/glue/* "$tmp/common/"
    fi
    if [ ! -d "$out/src" ]; then
        mv "$tmp" "$out/src"
    else
        python3 - "$tmp" "$out/src" <<'PY'
import filecmp, os, shutil, sys
new, old = sys.argv[1], sys.argv[2]
for root, _, files in os.walk(new):
    for f in files:
        a = os.path.join(root, f)
        b = os.path.join(old, os.path.relpath(a, new))
        if not os.path.exists(b) or not filecmp.cmp(a, b, shallow=False):
            os.makedirs(os.path.dirname(b), exist_ok=True)
            shutil.copyfile(a, b)  # a fresh mtime: ninja rebuilds what depends on it
PY
    fi
    rm -rf "$tmp"
    echo "$stamp" > "$out/src.stamp"
fi

cmake_args=(
    -S "$out/src" -B "$out/build" -G Ninja
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=ON
    -DGGML_NATIVE=ON
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF  # no downloads at build time
)
targets=(llama)
if [ "$variant" = fork ]; then
    hev="${3:?HASHEVICT_BUILD_DIR (holds libhashevict.so)}"
    hev="$(cd "$hev" && pwd)"
    cmake_args+=(-DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_COMMON=ON
                 "-DHASHEVICT_INCLUDE_DIR=$repo/include" "-DHASHEVICT_LIBRARY=$hev/libhashevict.so")
    targets+=(llama-server llama-cli)
else
    cmake_args+=(-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_COMMON=OFF)
fi
start=$(date +%s)
cmake "${cmake_args[@]}" >/dev/null
nice cmake --build "$out/build" -j "$jobs" --target "${targets[@]}"

# fork-probe (tests and speed figure) against this build's libllama
bin="$out/build/bin"
probe_args=(-O2 -std=c++17 -Wall -Wextra -I"$out/src/include" -I"$out/src/ggml/include"
            "$here/fork_probe.cpp" -o "$out/fork-probe" -L"$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin")
if [ "$variant" = fork ]; then
    probe_args+=("$out/src/common/hashevict-kv.cpp" -I"$out/src/common" -I"$repo/include"
                 -L"$hev" -lhashevict -Wl,-rpath,"$hev")
fi
# Its inputs: the fork's also include the glue and hashevict.h (a changed hashevict_params
# must reach fork-probe as it reaches llama-common, or the two disagree on the struct).
probe_deps=("$here/fork_probe.cpp" "$bin/libllama.so")
if [ "$variant" = fork ]; then
    probe_deps+=("$repo/include/hashevict.h" "$out/src/common/hashevict-kv.cpp" "$out/src/common/hashevict-kv.h")
fi
if [ ! -x "$out/fork-probe" ] || [ -n "$(find "${probe_deps[@]}" -newer "$out/fork-probe")" ]; then
    nice "${CXX:-c++}" "${probe_args[@]}"
fi
echo "build.sh: $variant built in $(( $(date +%s) - start )) s wall ($bin)"
