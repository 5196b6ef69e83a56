#!/usr/bin/env bash
# Re-vendor htmx 2 and its SSE / WebSocket extensions from the npm registry.
#
# Usage (from the repository root, or from anywhere):
#     static/vendor/htmx/update.sh
#
# What it does:
#   1. `npm pack`s each pinned package into a private temp dir (with a private
#      npm cache, so nothing is read from or left in ~/.npm).
#   2. Checks each tarball's sha512 against the integrity pinned below (the
#      value `npm view <pkg>@<version> dist.integrity` prints); any mismatch
#      aborts before anything in this directory is touched.
#   3. Extracts only the listed files, copies them here byte-for-byte and
#      rewrites MANIFEST.json (package, version, tarball path, sha256, integrity).
#   The temp dir is removed on exit, success or failure.
#
# To bump a version: change the version AND the integrity in PINS (get the
# integrity with `npm view <pkg>@<version> dist.integrity`), run this script,
# then run `pytest tests/test_vendor.py`.
#
# Requires: npm, tar, python3.
set -euo pipefail

# package  version  dist.integrity (sha512, base64, as npm reports it)
PINS='
htmx.org      2.0.11  sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ecH4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA==
htmx-ext-sse  2.2.4   sha512-LJmxVhykyflBWgh5PvbRidcyuqMHlgfajmmzumvKctv9puvsufeH6OaejSMZTNTnEI8O2wXXn4ZZtBdpEMqmEQ==
htmx-ext-ws   2.0.4   sha512-LnOpFRL/2hInhdKl/9N0OJsb4GYQ5/teUdTHNZYY9ytYdxYEqjfLEe0MWgF3ODjfwGJRb4E95igAbU66te48ZA==
'

# package  path inside the tarball  vendored file name (in this directory)
FILES='
htmx.org      package/dist/htmx.min.js  htmx.min.js
htmx.org      package/LICENSE           LICENSE.htmx.org
htmx-ext-sse  package/dist/sse.min.js   sse.min.js
htmx-ext-sse  package/LICENSE           LICENSE.htmx-ext-sse
htmx-ext-ws   package/dist/ws.min.js    ws.min.js
htmx-ext-ws   package/LICENSE           LICENSE.htmx-ext-ws
'

die() { printf 'update.sh: %s\n' "$*" >&2; exit 1; }

for tool in npm tar python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required but not on PATH"
done

DEST=$(cd -- "$(dirname -- "$0")" && pwd -P)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/htmx-vendor.XXXXXX")
trap 'rm -rf -- "$TMP"; rm -f -- "$DEST"/*.tmp.$$' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pin_field() {  # pin_field <package> <column>: print one column of the package's PINS row
    printf '%s\n' "$PINS" | awk -v p="$1" -v c="$2" '$1 == p { print $c; n++ } END { exit n != 1 }' \
        || die "package $1 must appear exactly once in PINS"
}

sha512_integrity() {  # npm's SRI form: "sha512-" + base64(raw digest), unwrapped
    python3 - "$1" <<'PY'
import base64, hashlib, sys
with open(sys.argv[1], "rb") as f:
    print("sha512-" + base64.b64encode(hashlib.sha512(f.read()).digest()).decode())
PY
}

# 1+2. Download and verify every tarball before touching anything in $DEST.
mkdir -p "$TMP/tarballs" "$TMP/npm-cache"
printf '%s\n' "$PINS" | while read -r pkg version integrity; do
    [ -n "$pkg" ] || continue
    echo "fetching $pkg@$version" >&2
    tarball=$(cd "$TMP" && npm pack "$pkg@$version" \
        --pack-destination "$TMP/tarballs" --cache "$TMP/npm-cache" \
        --ignore-scripts --silent --loglevel=error) \
        || die "npm pack $pkg@$version failed"
    tarball=$(printf '%s\n' "$tarball" | tail -n 1)
    [ -f "$TMP/tarballs/$tarball" ] || die "npm pack did not produce $tarball"
    mv -- "$TMP/tarballs/$tarball" "$TMP/tarballs/$pkg.tgz"

    actual=$(sha512_integrity "$TMP/tarballs/$pkg.tgz")
    [ "$actual" = "$integrity" ] \
        || die "integrity mismatch for $pkg@$version: pinned $integrity, got $actual"
    echo "verified $pkg@$version $integrity" >&2
done

# 3a. Extract only the listed members into a staging dir.
mkdir -p "$TMP/stage"
printf '%s\n' "$FILES" | while read -r pkg path name; do
    [ -n "$pkg" ] || continue
    mkdir -p "$TMP/extract/$pkg"
    tar -xzf "$TMP/tarballs/$pkg.tgz" -C "$TMP/extract/$pkg" -- "$path" \
        || die "$path not found in the $pkg tarball"
    [ -f "$TMP/extract/$pkg/$path" ] || die "$path in the $pkg tarball is not a regular file"
    cp -- "$TMP/extract/$pkg/$path" "$TMP/stage/$name"
done

# 3b. Build the manifest in the staging dir.
printf '%s\n' "$FILES" | while read -r pkg path name; do
    [ -n "$pkg" ] || continue
    version=$(pin_field "$pkg" 2)
    integrity=$(pin_field "$pkg" 3)
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$pkg" "$version" "$path" "$integrity"
done > "$TMP/files.tsv"

python3 - "$TMP/files.tsv" "$TMP/stage" > "$TMP/stage/MANIFEST.json" <<'PY'
import hashlib, json, os, sys

tsv, stage = sys.argv[1], sys.argv[2]
files = {}
with open(tsv, encoding="utf-8") as f:
    for line in f:
        name, package, version, path, integrity = line.rstrip("\n").split("\t")
        with open(os.path.join(stage, name), "rb") as vendored:
            sha256 = hashlib.sha256(vendored.read()).hexdigest()
        files[name] = {
            "package": package,
            "version": version,
            "path": path,
            "sha256": sha256,
            "integrity": integrity,
        }
manifest = {
    "_comment": "Generated by update.sh from the npm registry; do not edit by hand.",
    "files": dict(sorted(files.items())),
}
json.dump(manifest, sys.stdout, indent=2)
sys.stdout.write("\n")
PY

# 3c. Everything verified: install into $DEST (manifest last).
printf '%s\n' "$FILES" | while read -r pkg path name; do
    [ -n "$pkg" ] || continue
    cp -- "$TMP/stage/$name" "$DEST/$name.tmp.$$"
    chmod 0644 "$DEST/$name.tmp.$$"
    mv -f -- "$DEST/$name.tmp.$$" "$DEST/$name"
    echo "wrote $name" >&2
done
cp -- "$TMP/stage/MANIFEST.json" "$DEST/MANIFEST.json.tmp.$$"
chmod 0644 "$DEST/MANIFEST.json.tmp.$$"
mv -f -- "$DEST/MANIFEST.json.tmp.$$" "$DEST/MANIFEST.json"
echo "wrote MANIFEST.json" >&2
