#!/usr/bin/env bash
# The project's main job, on a sample layer the repository ships: inspect an eStargz blob, list
# its tree, read a file (every chunk verified), and verify the whole layer against the TOC digest
# recorded by the reference builder.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BLOB=testdata/vectors/edge-gzip-default/blob.esgz
TOC_DIGEST=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["expected"]["tocDigest"])' \
    testdata/vectors/edge-gzip-default/manifest.json)

echo "==== building the estargz tool"
cargo build --release --quiet -p estargz-snapshotter
estargz=target/release/estargz

echo; echo "==== estargz info $BLOB"
"$estargz" info "$BLOB"

echo; echo "==== estargz ls $BLOB | head -n 12"
"$estargz" ls "$BLOB" | head -n 12

echo; echo "==== estargz cat $BLOB dup/file.txt"
"$estargz" cat "$BLOB" dup/file.txt

echo; echo "==== estargz cat $BLOB sizes/4mib+1 --offset 4194300 | od -c  (decompresses only the last chunk)"
"$estargz" cat "$BLOB" sizes/4mib+1 --offset 4194300 | od -c | head -n 2

echo; echo "==== estargz verify $BLOB --toc-digest $TOC_DIGEST"
"$estargz" verify "$BLOB" --toc-digest "$TOC_DIGEST"
