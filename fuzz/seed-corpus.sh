#!/bin/sh
# Seeds the corpora of the fuzz targets that take whole blobs or TOCs (fuzz/corpus is not in
# git). Run from anywhere: sh fuzz/seed-corpus.sh
#
# - corpus/open_blob: every small (q-*) conformance vector blob, and zstd:chunked builds of the
#   quirk tars when the Go oracle (target/tools/esgz-oracle) is built;
# - corpus/index_toc: the vectors' small TOC JSONs, prefixed with the byte 0x00 (the target's
#   "raw JSON" mode; its first byte picks the mode).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
vectors="$root/testdata/vectors"
oracle="${ESGZ_ORACLE:-$root/target/tools/esgz-oracle}"

mkdir -p "$here/corpus/open_blob" "$here/corpus/index_toc"
n=0
for blob in "$vectors"/q-*/blob.esgz; do
    name=$(basename "$(dirname "$blob")")
    cat "$blob" >"$here/corpus/open_blob/$name.esgz"
    n=$((n + 1))
done
if [ -x "$oracle" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for tar in "$vectors"/inputs/quirks/*.tar; do
        name=$(basename "$tar" .tar)
        if "$oracle" build "$tar" "$tmp/$name.zst" --zstdchunked >/dev/null 2>&1; then
            cat "$tmp/$name.zst" >"$here/corpus/open_blob/zstd-$name.esgz"
            n=$((n + 1))
        fi
    done
else
    echo "note: $oracle not found; no zstd:chunked seeds (sh tools/esgz-oracle/build.sh target/tools)" >&2
fi
echo "corpus/open_blob: $n seed blobs"

m=0
for toc in "$vectors"/*/toc.json; do
    # Small TOCs only: the fuzzer's inputs stay short.
    if [ "$(wc -c <"$toc")" -le 65536 ]; then
        name=$(basename "$(dirname "$toc")")
        { printf '\000'; cat "$toc"; } >"$here/corpus/index_toc/$name.json"
        m=$((m + 1))
    fi
done
echo "corpus/index_toc: $m seed TOCs"
