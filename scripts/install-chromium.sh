#!/usr/bin/env bash
# Install headless Chromium for the HTML report screenshot test (tests/test_report.py).
# No-op when chromium is already installed. Installs with apt-get as root; as another user it
# only warns (the screenshot test then skips with a clear reason).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(command -v chromium || echo /usr/bin/chromium)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    # Not fatal: tests/test_report.py then skips its screenshot check, saying why.
    echo "install-chromium.sh: chromium is missing and this is not root; the report" \
         "screenshot test will be skipped (install with: sudo apt-get install -y chromium)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends chromium fonts-dejavu-core \
    || { apt-get update && apt-get install -y --no-install-recommends chromium fonts-dejavu-core; }
chromium --version
