#!/usr/bin/env bash
# deps.sh — check tako's Debian package dependencies and install the missing ones.
#
#   scripts/deps.sh build   compiler, make and the libraries tako links
#   scripts/deps.sh test    build + everything `make test` and the benchmarks use
#
# As root, missing packages are installed with apt-get (one `apt-get update`
# first, only when something is missing). Otherwise the exact command to run is
# printed and the exit status is 1. Silent when nothing is missing.
set -euo pipefail

usage() {
    echo "Usage: scripts/deps.sh build|test" >&2
    exit 2
}

[ $# -eq 1 ] || usage
case "$1" in
build | test) what=$1 ;;
*) usage ;;
esac

# A dependency is one package, or alternatives "a|b": satisfied when any of
# them is installed; the first one is installed when none is. An alternative
# that is a path ("/usr/bin/npm") is satisfied by any installed package that
# owns that file (e.g. a nodejs build that bundles npm and conflicts with
# Debian's npm package).
build_deps=(gcc make pkg-config xxd libyaml-dev libjansson-dev libsqlite3-dev libssl-dev libcurl4-openssl-dev)

# libFuzzer ships in compiler-rt, versioned like clang itself.
clang_rt() {
    local v=14
    if command -v clang >/dev/null 2>&1; then
        v=$(clang -dumpversion 2>/dev/null | cut -d. -f1)
        [ -n "$v" ] || v=14
    fi
    echo "libclang-rt-$v-dev|libclang-rt-dev"
}

test_deps=(python3 python3-pytest python3-pytest-xdist clang "$(clang_rt)" curl jq wrk apache2-utils haproxy
    "nginx-light|nginx" caddy redis-server nodejs "npm|/usr/bin/npm" chromium groff-base strace
    iproute2 openssh-server openssh-client rsync docker.io docker-registry busybox-static pebble
    prometheus testssl.sh sudo
    openssl)

installed() {
    case "$1" in
    /*) dpkg-query -S "$1" >/dev/null 2>&1 ;;
    *) [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ] ;;
    esac
}

deps=("${build_deps[@]}")
[ "$what" = test ] && deps+=("${test_deps[@]}")

missing=()
for dep in "${deps[@]}"; do
    IFS='|' read -r -a alts <<<"$dep"
    ok=0
    for p in "${alts[@]}"; do
        if installed "$p"; then
            ok=1
            break
        fi
    done
    [ $ok -eq 1 ] || missing+=("${alts[0]}")
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "tako: missing Debian packages: ${missing[*]}" >&2
    echo "Install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    echo "(after 'sudo apt-get update' if a package is not found)" >&2
    exit 1
fi

echo "tako: installing missing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "tako: installed ${missing[*]}"
