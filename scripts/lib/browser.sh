# shellcheck shell=bash
# What the real-browser tests need, installed when missing: Debian's chromium and
# scripts/browser's npm packages (playwright-core, axe-core).
#
#   source scripts/lib/browser.sh; browser_ensure

browser_ensure() {
    if [ ! -x /usr/bin/chromium ]; then
        echo "chromium is missing; installing Debian's chromium" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >&2
    fi
    if [ ! -d scripts/browser/node_modules/playwright-core ] || [ ! -d scripts/browser/node_modules/axe-core ]; then
        echo "installing scripts/browser's npm packages" >&2
        (cd scripts/browser && npm ci --no-audit --no-fund --loglevel=error >&2)
    fi
}
