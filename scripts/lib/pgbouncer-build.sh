# shellcheck shell=bash
# A PgBouncer that keeps protocol-level prepared statements in transaction mode (>= 1.21,
# `max_prepared_statements`), for `database.pooler = "transaction-prepared"`. Debian 12 ships
# 1.18 (which does not) and trixie's 1.24 binary needs a newer glibc, so this builds Debian's
# pinned upstream source once, against bookworm's libraries:
#
#   source scripts/lib/pgbouncer-build.sh
#   pgbouncer_ensure_prepared_capable     # prints the binary's path, exports PGBOUNCER_PREPARED_BIN
#   PGBOUNCER_BIN=$PGBOUNCER_PREPARED_BIN PGBOUNCER_MAX_PREPARED_STATEMENTS=200 pgbouncer_start …
#
# The tarball comes from deb.debian.org (the same file Debian's trixie package is built
# from; its sha256 is pinned here and checked before anything is unpacked). The build lands
# in /root/.cache/pisgate/pgbouncer-1.24.1/ (PGBOUNCER_BUILD_PREFIX) and is reused while
# its binary is there. Build dependencies missing on the box (libevent-dev, libc-ares-dev,
# libssl-dev, pkg-config, make, gcc) are installed with apt-get. About a minute on 2 cores.

PGBOUNCER_BUILD_VERSION=1.24.1
PGBOUNCER_BUILD_TARBALL=pgbouncer_1.24.1.orig.tar.gz
PGBOUNCER_BUILD_URL=http://deb.debian.org/debian/pool/main/p/pgbouncer/$PGBOUNCER_BUILD_TARBALL
PGBOUNCER_BUILD_SHA256=da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0

pgbouncer_build_prefix() {
    echo "${PGBOUNCER_BUILD_PREFIX:-/root/.cache/pisgate/pgbouncer-$PGBOUNCER_BUILD_VERSION}"
}

pgbouncer_ensure_prepared_capable() {
    local prefix bin src missing=() p started
    prefix=$(pgbouncer_build_prefix)
    bin=$prefix/bin/pgbouncer
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "PgBouncer $PGBOUNCER_BUILD_VERSION"; then
        PGBOUNCER_PREPARED_BIN=$bin
        export PGBOUNCER_PREPARED_BIN
        echo "$bin"
        return 0
    fi
    started=$(date +%s)
    echo "pgbouncer-build: building PgBouncer $PGBOUNCER_BUILD_VERSION into $prefix (once; about a minute)" >&2
    for p in libevent-dev libc-ares-dev libssl-dev pkg-config make gcc; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "pgbouncer-build: installing ${missing[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 \
            || { echo "pgbouncer-build: cannot install ${missing[*]}" >&2; return 1; }
    fi
    src=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$src'" RETURN
    curl -fsS --retry 3 -m 120 -o "$src/$PGBOUNCER_BUILD_TARBALL" "$PGBOUNCER_BUILD_URL" \
        || { echo "pgbouncer-build: cannot download $PGBOUNCER_BUILD_URL" >&2; return 1; }
    if ! echo "$PGBOUNCER_BUILD_SHA256  $src/$PGBOUNCER_BUILD_TARBALL" | sha256sum -c --status; then
        echo "pgbouncer-build: $PGBOUNCER_BUILD_TARBALL does not have the pinned sha256; refusing it" >&2
        return 1
    fi
    tar -xzf "$src/$PGBOUNCER_BUILD_TARBALL" -C "$src"
    (
        cd "$src/pgbouncer-$PGBOUNCER_BUILD_VERSION" \
            && ./configure --prefix="$prefix" --with-cares --without-pam --without-systemd >"$src/configure.log" 2>&1 \
            && make -j"$(nproc)" >"$src/make.log" 2>&1 \
            && make install >"$src/install.log" 2>&1
    ) || {
        echo "pgbouncer-build: the build failed; the end of its logs:" >&2
        tail -n 30 "$src"/*.log >&2
        return 1
    }
    "$bin" --version >/dev/null 2>&1 || { echo "pgbouncer-build: $bin does not run" >&2; return 1; }
    echo "pgbouncer-build: built $("$bin" --version | head -1) in $(($(date +%s) - started)) s" >&2
    PGBOUNCER_PREPARED_BIN=$bin
    export PGBOUNCER_PREPARED_BIN
    echo "$bin"
}
