#!/usr/bin/env bash
# Makes sure the services Tangram's tests talk to are running: PostgreSQL
# (5432, trust auth, db "test"), MariaDB (3306, root without password, db
# "test"), Redis (6379), NATS with JetStream (4222), and Debian's Chromium for
# the console browser test. Uses what already runs on the standard ports;
# otherwise installs (Debian packages) and starts it. Idempotent and quiet.
set -uo pipefail

log() { printf 'services: %s\n' "$*" >&2; }
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_up() { for _ in $(seq 1 60); do up "$1" && return 0; sleep 0.5; done; return 1; }
SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
apt_updated=""
need_pkg() { # package...
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq >/dev/null 2>&1; apt_updated=1; fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || log "could not install ${missing[*]}"
}

# PostgreSQL
if ! up 5432; then
  need_pkg postgresql
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  if [ -n "$ver" ]; then
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start >/dev/null 2>&1 || true
  fi
  wait_up 5432 || log "PostgreSQL did not start on 5432"
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf 2>/dev/null | tail -1)
  if [ -n "$hba" ] && ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba" && $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >/dev/null 2>&1
  fi
fi
if up 5432 && command -v psql >/dev/null; then
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE test" >/dev/null 2>&1 || true
  # XA branches on PostgreSQL (PREPARE TRANSACTION) need prepared
  # transactions, off (0) by default; the setting takes a restart.
  if [ "$(psql -h 127.0.0.1 -U postgres -tAc 'SHOW max_prepared_transactions' 2>/dev/null)" = "0" ]; then
    psql -h 127.0.0.1 -U postgres -qc "ALTER SYSTEM SET max_prepared_transactions = 64" >/dev/null 2>&1
    ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
    if [ -n "$ver" ]; then
      log "restarting PostgreSQL to enable prepared transactions"
      $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main restart >/dev/null 2>&1 || log "PostgreSQL: restart failed; set max_prepared_transactions > 0 yourself"
      wait_up 5432 || log "PostgreSQL did not come back on 5432"
    else
      log "PostgreSQL: set max_prepared_transactions > 0 and restart it (XA tests need it)"
    fi
  fi
fi

# MariaDB
if ! up 3306; then
  need_pkg mariadb-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd >/dev/null 2>&1 || true
  wait_up 3306 || log "MariaDB did not start on 3306"
fi
# The sharding proxy's tests drive it with the mariadb command-line client
# and sysbench.
command -v mariadb >/dev/null || need_pkg mariadb-client-core
command -v sysbench >/dev/null || need_pkg sysbench
if up 3306 && command -v mysql >/dev/null; then
  if ! mysql -h 127.0.0.1 -uroot -e "SELECT 1" >/dev/null 2>&1; then
    # A fresh Debian MariaDB lets root in only through the socket: allow
    # root without a password over TCP from loopback, as the tests expect.
    mysql -uroot -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES;" >/dev/null 2>&1 \
      || log "MariaDB: could not allow root over TCP; set TANGRAM_TEST_MYSQL"
  fi
  mysql -h 127.0.0.1 -uroot -e "CREATE DATABASE IF NOT EXISTS test" >/dev/null 2>&1 || true
fi

# Redis
if ! up 6379; then
  need_pkg redis-server
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 || true
  wait_up 6379 || log "Redis did not start on 6379"
fi

# redis-server itself, also when Redis on 6379 comes from elsewhere: the
# lock and cache tests start a 3-master Redis Cluster from it.
if ! command -v redis-server >/dev/null 2>&1; then
  need_pkg redis-server
fi

# NATS with JetStream
if ! up 4222; then
  need_pkg nats-server
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log >/dev/null 2>&1 || true
  wait_up 4222 || log "NATS did not start on 4222"
fi

# Python 3 for the Python client example's test (examples/python).
if ! command -v python3 >/dev/null 2>&1; then
  need_pkg python3
fi

# Node.js and npm for the OpenTelemetry JS SDK example's test
# (examples/node: npm ci fetches the SDK from the npm registry).
command -v node >/dev/null 2>&1 || need_pkg nodejs
command -v npm >/dev/null 2>&1 || need_pkg npm

# strace for the durability test that reads the store's system calls
# (mq/store: a new file's directory fsynced before an ack).
if ! command -v strace >/dev/null 2>&1; then
  need_pkg strace
fi

# The container runtime's tests and tour: busybox-static builds root
# filesystems, umoci builds OCI images, runc is the peer the tests and the
# benchmark compare with.
command -v busybox >/dev/null 2>&1 || need_pkg busybox-static
command -v umoci >/dev/null 2>&1 || need_pkg umoci
command -v runc >/dev/null 2>&1 || need_pkg runc

# Chromium for the console browser test.
if ! command -v chromium >/dev/null 2>&1; then
  need_pkg chromium
fi
exit 0
