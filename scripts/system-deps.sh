#!/usr/bin/env bash
# The Debian packages the tests use, installed when missing: a real redis-server (store and
# scale-out tests), Debian's Chromium (Playwright drives /usr/bin/chromium for the browser tests;
# it never downloads a browser of its own), g++ (torch.compile on a CPU builds its kernels with it)
# and openssl (the TLS tests make their own certificate authority). `make test` and CI both come
# through here, so a fresh clone needs nothing installed by hand.
set -euo pipefail

need=()
command -v g++ >/dev/null || need+=(g++)
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
command -v openssl >/dev/null || need+=(openssl)
((${#need[@]})) || exit 0

if ! command -v apt-get >/dev/null; then
    echo "The tests need ${need[*]}; install them with your system's package manager." >&2
    exit 1
fi
sudo=()
if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "The tests need ${need[*]}: run 'apt-get install ${need[*]}' as root." >&2; exit 1; }
    sudo=(sudo)
fi
echo "Installing ${need[*]} for the tests (Debian packages)..."
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
