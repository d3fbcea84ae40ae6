#!/usr/bin/env bash
# What the browser tests (tests/browser/) need besides the Python packages: Debian's Chromium (a browser
# download of Playwright's own cannot be fetched here) and axe-core from npm, kept in .tools/browser/.
#   scripts/browser_tools.sh install   # idempotent; apt needs root (or sudo)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

AXE_VERSION=4.14.1
TOOLS=.tools/browser

say() { echo "browser_tools: $*" >&2; }

chromium_install() {
  if [ -x /usr/bin/chromium ]; then return 0; fi
  say "installing chromium from Debian"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
}

axe_install() {
  local installed="$TOOLS/node_modules/axe-core/package.json"
  if [ -f "$installed" ] && grep -q "\"version\": \"$AXE_VERSION\"" "$installed"; then return 0; fi
  command -v npm >/dev/null || { say "npm is required for axe-core"; return 1; }
  say "installing axe-core $AXE_VERSION from npm into $TOOLS"
  mkdir -p "$TOOLS"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS" "axe-core@$AXE_VERSION" >/dev/null
}

case "${1:-install}" in
  install) chromium_install; axe_install ;;
  *) say "usage: $0 install"; exit 2 ;;
esac
