#!/bin/sh
# Entrypoint of the sealbox image: start a node in one of three roles.
#
#   daemon [FLAGS...]     a node on its own: sealbox daemon --listen $SEALBOX_LISTEN FLAGS (the default)
#   bootstrap [FLAGS...]  the same, and once it answers 'sealbox status', write its address
#                         (.../tcp/PORT/p2p/<peer id>) to $SEALBOX_BOOTSTRAP_FILE for the peers
#   peer [FLAGS...]       wait for $SEALBOX_BOOTSTRAP_FILE, then sealbox daemon --bootstrap <that address>
#
# FLAGS go to 'sealbox daemon' (e.g. --log-level debug); a first argument starting with '-' means
# 'daemon' with those flags. Anything else runs as a command (docker run IMAGE sealbox --help).
#
# Environment (the defaults are the image's):
#   SEALBOX_REPO            the node's repo (the image sets /data, a volume)
#   SEALBOX_LISTEN          listen multiaddr(s), space-separated; default /ip4/0.0.0.0/tcp/4001.
#                           'auto' is /ip4/<this container's IPv4 address>/tcp/4001, read from
#                           $SEALBOX_HOSTS_FILE (default /etc/hosts, where Docker puts it): a node that
#                           listens on 0.0.0.0 announces 0.0.0.0, which other containers cannot dial.
#   SEALBOX_BOOTSTRAP_FILE  the file that carries the bootstrap's address; default /shared/bootstrap.addr
#   SEALBOX_BOOTSTRAP_WAIT  seconds a peer waits for that file, and the bootstrap for its own daemon to
#                           answer; default 60
#
# The daemon replaces this shell (exec), so it receives SIGTERM directly and stops cleanly.
set -euf # -f: no pathname expansion (multiaddrs are split on spaces, never globbed)

ME=sealbox-entrypoint
LISTEN=${SEALBOX_LISTEN:-/ip4/0.0.0.0/tcp/4001}
ADDR_FILE=${SEALBOX_BOOTSTRAP_FILE:-/shared/bootstrap.addr}
WAIT=${SEALBOX_BOOTSTRAP_WAIT:-60}
HOSTS_FILE=${SEALBOX_HOSTS_FILE:-/etc/hosts}

log() { printf '%s: %s\n' "$ME" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$ME" "$*" >&2
    exit 1
}

case $WAIT in
'' | *[!0-9]*) die "SEALBOX_BOOTSTRAP_WAIT must be a whole number of seconds, not '$WAIT'" ;;
esac

# This container's IPv4 address: the line of the hosts file that names our hostname (no DNS query).
container_ip() {
    python3 - "$HOSTS_FILE" "$(uname -n)" <<'EOF'
import ipaddress, sys
path, name = sys.argv[1], sys.argv[2]
try:
    lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
except OSError as exc:
    sys.exit(f"cannot read {path}: {exc.strerror}")
for line in lines:
    words = line.split("#", 1)[0].split()
    if len(words) < 2 or name not in words[1:]:
        continue
    try:
        ip = ipaddress.ip_address(words[0])
    except ValueError:
        continue
    if ip.version == 4 and not ip.is_loopback and not ip.is_unspecified:
        print(ip)
        sys.exit(0)
sys.exit(f"{path} gives no IPv4 address other containers can reach for this host ({name})")
EOF
}

# The daemon's flags for SEALBOX_LISTEN, one '--listen ADDR' per address, in $listen_flags.
listen_flags() {
    listen_flags=
    for addr in $LISTEN; do
        if [ "$addr" = auto ]; then
            ip=$(container_ip) || die "SEALBOX_LISTEN=auto: no address found; set SEALBOX_LISTEN to a multiaddr"
            addr=/ip4/$ip/tcp/4001
        fi
        case $addr in
        /*) ;;
        *) die "SEALBOX_LISTEN: not a multiaddr: '$addr'" ;;
        esac
        listen_flags="$listen_flags --listen $addr"
    done
    [ -n "$listen_flags" ] || die "SEALBOX_LISTEN is empty"
}

# Once the daemon (process $1) answers, write the first address it listens on that others can dial.
publish_address() {
    daemon_pid=$1
    deadline=$(($(date +%s) + WAIT))
    until status=$(sealbox status --json 2>/dev/null); do
        if ! kill -0 "$daemon_pid" 2>/dev/null; then
            log "the daemon exited before it answered: no bootstrap address written"
            return 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "error: the daemon did not answer 'sealbox status' within $WAIT s: no bootstrap address written"
            return 1
        fi
        sleep 0.2
    done
    addr=$(printf '%s' "$status" | python3 -c '
import ipaddress, json, sys
for addr in json.load(sys.stdin)["addrs"]:
    parts = addr.split("/")
    if len(parts) > 2 and parts[1] in ("ip4", "ip6") and not ipaddress.ip_address(parts[2]).is_unspecified:
        print(addr)
        sys.exit(0)
sys.exit("the daemon listens on no address a peer could dial (0.0.0.0 or ::): use SEALBOX_LISTEN=auto")
') || {
        log "error: no bootstrap address written"
        return 1
    }
    tmp="$ADDR_FILE.tmp.$$"
    if ! { printf '%s\n' "$addr" >"$tmp" && mv -f "$tmp" "$ADDR_FILE"; }; then
        rm -f "$tmp"
        log "error: cannot write $ADDR_FILE"
        return 1
    fi
    log "bootstrap address $addr written to $ADDR_FILE"
}

# The bootstrap's address, once $ADDR_FILE holds it (at most WAIT seconds).
bootstrap_address() {
    deadline=$(($(date +%s) + WAIT))
    while [ ! -s "$ADDR_FILE" ]; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            die "no bootstrap address in $ADDR_FILE after $WAIT s: is the bootstrap node running? (docker compose logs bootstrap)"
        fi
        sleep 0.2
    done
    read -r addr <"$ADDR_FILE" || [ -n "${addr:-}" ] || die "cannot read $ADDR_FILE"
    case $addr in
    /*/p2p/*) ;;
    *) die "$ADDR_FILE does not hold a peer address ending in /p2p/<peer id>: '$addr'" ;;
    esac
    printf '%s\n' "$addr"
}

case ${1:-daemon} in
-*) set -- daemon "$@" ;;
esac
role=${1:-daemon}
[ $# -eq 0 ] || shift

case $role in
daemon)
    listen_flags
    # shellcheck disable=SC2086 # one word per flag and address: multiaddrs hold no spaces
    exec sealbox daemon $listen_flags "$@"
    ;;
bootstrap)
    listen_flags
    # a file left by an earlier run may name another identity: peers must wait for this run's
    rm -f "$ADDR_FILE"
    log "starting the bootstrap node; its address goes to $ADDR_FILE"
    # in a child of a subshell that exits at once: the writer outlives nobody's wait, and the daemon
    # below takes over this process (pid $$), which the writer watches
    (publish_address "$$" </dev/null &)
    # shellcheck disable=SC2086
    exec sealbox daemon $listen_flags "$@"
    ;;
peer)
    listen_flags
    addr=$(bootstrap_address) || exit 1
    log "joining through $addr"
    # shellcheck disable=SC2086
    exec sealbox daemon $listen_flags --bootstrap "$addr" "$@"
    ;;
*)
    exec "$role" "$@"
    ;;
esac
