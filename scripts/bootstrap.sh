#!/bin/sh
# One entry for npm start / test / bench / sim / chaos: installs what is
# missing (npm packages and the build; Debian packages when root on Debian),
# then runs the command. Usage: sh scripts/bootstrap.sh <start|test|bench|sim|chaos> [args...]
set -eu
cd "$(dirname "$0")/.."
what="$1"; shift

say() { printf '%s\n' "ringkv: $*" >&2; }

# npm packages and the TypeScript build.
if [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ]; then
  say "installing npm packages (npm install)"
  npm install --no-audit --no-fund >&2
fi
if [ "$what" = test ] || [ ! -f dist/src/cli/main.js ] || [ -n "$(find src tests -name '*.ts' -newer dist/src/cli/main.js 2>/dev/null | head -1)" ]; then
  say "building (tsc)"
  npx tsc -p tsconfig.json >&2
fi

# Debian packages, installed only when missing and only where we can.
can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_updated=no
need_deb() { # need_deb <file that proves it is installed> <package>
  [ -e "$1" ] && return 0
  can_apt || return 1
  if [ "$apt_updated" = no ]; then
    say "apt-get update"
    apt-get update -qq >&2 || true
    apt_updated=yes
  fi
  say "installing Debian package $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y "$2" >&2
  [ -e "$1" ]
}
zookeeper_ok() { need_deb /usr/share/java/zookeeper.jar zookeeper; }

case "$what" in
  start)
    if zookeeper_ok; then
      exec node dist/src/cli/main.js cluster "$@"
    fi
    cat >&2 <<'MSG'

ringkv: ZooKeeper is not installed and cannot be installed here (that needs
root on Debian: apt-get install zookeeper), so the 5-node cluster cannot
start. Starting one standalone node instead on 127.0.0.1:9001 — every command
works on it (try: echo "PUT a b" | nc 127.0.0.1 9001). To run the cluster,
install ZooKeeper or point at one: npm start -- --zk host:2181.

MSG
    exec node dist/src/cli/main.js node --port 9001 --data-dir ./data/standalone "$@"
    ;;
  test)
    zookeeper_ok || say "WARNING: ZooKeeper is missing: the cluster tests will fail"
    need_deb /usr/bin/redis-cli redis-tools || say "WARNING: redis-cli is missing: the redis-cli test will fail"
    need_deb /usr/bin/redis-server redis-server || say "WARNING: redis-server is missing: the bench client test will fail"
    need_deb /bin/nc.openbsd netcat-openbsd || say "WARNING: nc is missing: the netcat test will fail"
    need_deb /usr/sbin/iptables iptables || say "WARNING: iptables is missing: partition tests will fail"
    exec node dist/tests/run.js "$@"
    ;;
  bench)
    need_deb /usr/bin/redis-server redis-server || say "WARNING: redis-server is missing: no Redis comparison"
    need_deb /usr/bin/etcd etcd-server || say "WARNING: etcd is missing: no etcd comparison"
    zookeeper_ok || say "WARNING: ZooKeeper is missing: no cluster benchmark"
    exec node dist/src/cli/main.js bench-suite "$@"
    ;;
  sim)
    exec node dist/src/cli/main.js sim "$@"
    ;;
  chaos)
    zookeeper_ok || say "WARNING: ZooKeeper is missing: the fault suite cannot run"
    need_deb /usr/sbin/iptables iptables || say "WARNING: iptables is missing: no partition nemesis"
    exec node dist/tests/faults/main.js "$@"
    ;;
  *)
    say "unknown command: $what"; exit 2
    ;;
esac
