#!/usr/bin/env bash
# The project's main job, on sample layers the repository ships.
#
# 1. Inspect an eStargz blob, list its tree, read a file (every chunk verified), and verify the
#    whole layer against the TOC digest recorded by the reference builder.
# 2. Lazy pull: convert a plain tar layer to eStargz, serve it from a loopback HTTP server
#    (examples/src/bin/serve_blob.rs), mount it with FUSE straight from its URL, read a few
#    files, and print how many bytes were fetched versus the layer's size. Without FUSE (not
#    root, or no /dev/fuse) the same files are read through the library
#    (examples/src/bin/lazy_read.rs) instead (ESTARGZ_DEMO_NO_FUSE=1 forces
#    that path).
#
# Cleans up (unmount, server, temporary files) on exit, also on error or Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BLOB=testdata/vectors/edge-gzip-default/blob.esgz
TOC_DIGEST=$(sed -n 's/.*"tocDigest": *"\(sha256:[0-9a-f]*\)".*/\1/p' \
    testdata/vectors/edge-gzip-default/manifest.json | head -n 1)

echo "==== building the estargz tool and the demo HTTP server"
cargo build --release --quiet -p estargz-snapshotter
cargo build --release --quiet -p estargz-examples --bin serve_blob --bin lazy_read
estargz=target/release/estargz
serve_blob=target/release/serve_blob
lazy_read=target/release/lazy_read

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

# ---- Part 2: a lazy pull over HTTP -------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/estargz-demo.XXXXXX")
MNT="$WORK/mnt"
SERVER_PID=
MOUNT_PID=

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$MOUNT_PID" ] && kill -0 "$MOUNT_PID" 2>/dev/null; then
        kill -INT "$MOUNT_PID" 2>/dev/null || true
        wait "$MOUNT_PID" 2>/dev/null || true
    fi
    if mountpoint -q "$MNT" 2>/dev/null; then
        umount -l "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true
    fi
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if ! mountpoint -q "$MNT" 2>/dev/null; then
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

LAYER_TAR=testdata/vectors/inputs/edge.tar
LAYER="$WORK/layer.esgz"
echo; echo "==== estargz convert $LAYER_TAR layer.esgz  (a plain tar layer, $(stat -c %s "$LAYER_TAR") bytes)"
"$estargz" convert "$LAYER_TAR" "$LAYER" --json >"$WORK/convert.json"
LAYER_TOC_DIGEST=$(sed -n 's/.*"tocDigest": *"\(sha256:[0-9a-f]*\)".*/\1/p' "$WORK/convert.json")
LAYER_SIZE=$(stat -c %s "$LAYER")
echo "eStargz blob: $LAYER_SIZE bytes, TOC digest $LAYER_TOC_DIGEST"

echo; echo "==== serving it over HTTP on loopback (Range requests)"
"$serve_blob" "$LAYER" --name layer.esgz >"$WORK/url" 2>"$WORK/server.log" &
SERVER_PID=$!
URL=
for _ in $(seq 100); do
    URL=$(head -n 1 "$WORK/url" 2>/dev/null || true)
    [ -n "$URL" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
done
if [ -z "$URL" ]; then
    echo "the HTTP server did not start:" >&2
    cat "$WORK/server.log" >&2
    exit 1
fi
echo "$URL"

# Stops the server, waits for it to exit (it writes its count on the way out) and sets SENT to
# the body bytes it sent. Runs in this shell, not in $(...): only the shell that started the
# server can wait for it, and reading the log before it exited would race its last line.
stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    SENT=$(sed -n 's/^serve_blob: sent \([0-9]*\) body bytes.*/\1/p' "$WORK/server.log")
}

# ESTARGZ_DEMO_NO_FUSE=1 shows the no-FUSE path on a machine that has FUSE.
fuse_ok=
if [ "$(id -u)" = 0 ] && [ -c /dev/fuse ] && [ -z "${ESTARGZ_DEMO_NO_FUSE:-}" ]; then
    fuse_ok=1
fi

FETCHED=
if [ -n "$fuse_ok" ]; then
    mkdir -p "$MNT"
    echo; echo "==== estargz mount $URL MNT --toc-digest $LAYER_TOC_DIGEST"
    "$estargz" mount "$URL" "$MNT" --toc-digest "$LAYER_TOC_DIGEST" \
        >>"$WORK/mount.out" 2>>"$WORK/mount.err" &
    MOUNT_PID=$!
    for _ in $(seq 200); do
        mountpoint -q "$MNT" && break
        kill -0 "$MOUNT_PID" 2>/dev/null || break
        sleep 0.05
    done
    if ! mountpoint -q "$MNT"; then
        echo "mounting failed:"
        cat "$WORK/mount.err"
        fuse_ok=
        MOUNT_PID=
    fi
fi

if [ -n "$fuse_ok" ]; then
    echo; echo "==== ls -lR MNT | head -n 12  (metadata only: nothing fetched)"
    (cd "$MNT" && { ls -lR . || true; } | head -n 12)
    echo; echo "==== cat MNT/dup/file.txt"
    cat "$MNT/dup/file.txt"
    echo; echo "==== sha256sum of three files"
    (cd "$MNT" && sha256sum links/target.txt nodotslash/file.txt sizes/random-300000)
    echo; echo "==== the mount's counters so far (SIGUSR1)"
    kill -USR1 "$MOUNT_PID"
    sleep 0.3
    cat "$WORK/mount.out"
    : >"$WORK/mount.out"
    echo; echo "==== unmounting"
    kill -INT "$MOUNT_PID"
    wait "$MOUNT_PID" || true
    MOUNT_PID=
    cat "$WORK/mount.err" "$WORK/mount.out"
    FETCHED=$(sed -n 's/^fetched \([0-9]*\) of [0-9]* blob bytes.*/\1/p' "$WORK/mount.out" | tail -n 1)
    stop_server
    echo "(the HTTP server sent $SENT bytes)"
else
    echo
    echo "==== FUSE is not available here (mounting needs root and /dev/fuse): reading the same"
    echo "==== files through the library instead (examples/src/bin/lazy_read.rs: estargz-io's"
    echo "==== RemoteLayer over the URL; only their chunks are fetched, each verified)"
    echo; echo "==== lazy_read URL TOC_DIGEST dup/file.txt links/target.txt nodotslash/file.txt sizes/random-300000"
    "$lazy_read" "$URL" "$LAYER_TOC_DIGEST" dup/file.txt links/target.txt nodotslash/file.txt \
        sizes/random-300000
    stop_server
    echo "(the HTTP server sent $SENT bytes)"
    FETCHED=$SENT
fi

if [ -z "$FETCHED" ]; then
    echo "could not tell how many bytes were fetched" >&2
    exit 1
fi
echo
echo "==== result: fetched $FETCHED of $LAYER_SIZE layer bytes ($((FETCHED * 100 / LAYER_SIZE))%) to read those files"
