#!/usr/bin/env bash
# Fetches the FHIR R4 npm packages that the generator (tools/gen-fhir-tables) and the
# spec-example tests of crates/fhir read, into $REPO/.cache/fhir-packages/<name>/package/.
#
# Only `npm pack` against the npm registry is used: no `npm install`, no other hosts.
# Idempotent: a package whose directory holds the `.complete` marker is skipped; the marker is
# written last, so an interrupted extraction is redone on the next run.
#
# Note: on registry.npmjs.org `hl7.fhir.r4.core` exists as a name but has no published versions
# (its packument is empty), so it cannot be fetched from npm. `hl7.fhir.r4.examples@4.0.1`
# contains every resource of the R4 specification, including the StructureDefinitions,
# SearchParameters and CompartmentDefinitions the generator needs, so the generator falls back
# to it. The core package is still attempted (it may be published later) but its absence is
# only a warning.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
DEST="$REPO/.cache/fhir-packages"
VERSION="4.0.1"

# name:required(1)|optional(0)
PACKAGES=("hl7.fhir.r4.core:0" "hl7.fhir.r4.examples:1")

command -v npm >/dev/null || { echo "fetch-fhir-packages: npm is required" >&2; exit 1; }
mkdir -p "$DEST"
# Serialise concurrent runs (e.g. several test binaries fetching at once).
if command -v flock >/dev/null; then
    exec 9>"$DEST/.lock"
    flock 9
fi

fetch() {
    local name="$1" required="$2"
    local dir="$DEST/$name"
    local marker="$dir/.complete"
    if [[ -f "$marker" ]] && [[ "$(cat "$marker")" == "$name@$VERSION" ]]; then
        echo "fetch-fhir-packages: $name@$VERSION already present"
        return 0
    fi
    rm -rf "$dir"
    local tmp
    tmp="$(mktemp -d "$DEST/.tmp-$name.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" RETURN
    echo "fetch-fhir-packages: fetching $name@$VERSION"
    if ! (cd "$tmp" && npm pack --silent "$name@$VERSION" >/dev/null 2>"$tmp/npm.log"); then
        if [[ "$required" == 1 ]]; then
            cat "$tmp/npm.log" >&2
            echo "fetch-fhir-packages: could not fetch $name@$VERSION" >&2
            return 1
        fi
        echo "fetch-fhir-packages: warning: $name@$VERSION is not available on the npm registry; skipped" >&2
        return 0
    fi
    mkdir -p "$tmp/x"
    tar -xzf "$tmp"/*.tgz -C "$tmp/x"
    mv "$tmp/x" "$dir"
    echo "$name@$VERSION" >"$marker"
    echo "fetch-fhir-packages: $name@$VERSION extracted to $dir"
}

status=0
for entry in "${PACKAGES[@]}"; do
    fetch "${entry%%:*}" "${entry##*:}" || status=1
done
exit "$status"
