#!/usr/bin/env bash
# Builds the example for production into dist/ (what the end-to-end tests serve), unless its
# sources, its lockfile and the package's types are those the last build was made from (their
# hash is kept in dist/.sources). Reinstalls node_modules only when package-lock.json changed.
# Needs a Node the Angular CLI accepts first on PATH: `make examples` sees to it.
set -euo pipefail
cd "$(dirname "$0")"

if ! node -e 'const [a, b, c] = process.versions.node.split(".").map(Number);
  process.exit((a === 22 && (b > 22 || (b === 22 && c >= 3))) || (a === 24 && b >= 15) || a >= 26 ? 0 : 1)'; then
  echo "examples/angular: the Angular CLI needs Node ^22.22.3, ^24.15 or >= 26; $(command -v node) is $(node --version)" >&2
  exit 1
fi

lock=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ $(cat node_modules/.tollgate-lock 2>/dev/null) != "$lock" ]]; then
  echo "examples/angular: npm ci (Node $(node --version))"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock" >node_modules/.tollgate-lock
fi

inputs() {
  local dirs=(src)
  if [[ -d public ]]; then dirs+=(public); fi
  find "${dirs[@]}" -type f | LC_ALL=C sort
  printf '%s\n' angular.json package.json package-lock.json tsconfig.json tsconfig.app.json \
    ../../packages/tollgate-usage/package.json ../../packages/tollgate-usage/tollgate-usage.d.ts
}
sources=$(inputs | xargs sha256sum | sha256sum | cut -d' ' -f1)
if [[ $(cat dist/.sources 2>/dev/null) == "$sources" ]]; then
  echo "examples/angular: build up to date"
  exit 0
fi
NG_CLI_ANALYTICS=false npx --no-install ng build
echo "$sources" >dist/.sources
