#!/usr/bin/env bash
# Installs the Debian packages the test suite drives as independent peers:
#   mosquitto-clients  (mosquitto_pub / mosquitto_sub)
#   mosquitto          (mosquitto_passwd writes password files; the broker itself is the
#                       reference in the acl_file differential test; the tests start it on
#                       127.0.0.1 themselves, nothing here starts or enables its service)
#   python3-paho-mqtt  (an MQTT 5 client for /usr/bin/python3)
#   python3-pyotp      (an independent TOTP implementation)
#   openssl            (verifies the certificates we issue; s_client tries to renegotiate)
#   sslscan            (lists the TLS versions and cipher suites the listener accepts)
#   systemd            (systemd-analyze verify checks scripts/mqtt-bastion.service; nothing is started)
#   mariadb-server     (mariadbd + mariadb-install-db: the MySQL tests start a throwaway server;
#                       nothing here starts or enables the system service)
#   fail2ban           (fail2ban-regex runs scripts/fail2ban/filter.d against real broker logs;
#                       its ban daemon is neither started nor left enabled)
#   docker.io          (dockerd, containerd, runc and /usr/bin/docker: test/deploy/container.test.ts
#                       starts a throwaway engine in a temp dir (scripts/docker-engine.sh) to
#                       build and run docker/Dockerfile; the system docker/containerd services are
#                       neither started nor left enabled)
#   mmdebstrap         (scripts/docker-base-image.sh bootstraps the local node:20-bookworm-slim
#                       base image from the Debian mirror: no registry is pulled from)
#   haproxy            (a real PROXY protocol v2 sender in front of the broker: the test runs
#                       its own `haproxy -db` on 127.0.0.1; the haproxy service is neither
#                       started nor left enabled)
#   redis-server       (the cluster tests start their own throwaway redis-server on 127.0.0.1,
#                       no config file, nothing saved; the redis-server service is neither
#                       started nor left enabled)
#   nginx-light, libnginx-mod-stream
#                      (nginx -t checks the NGINX stream front of docs/cluster.md; the nginx
#                       service is neither started nor left enabled)
# Does nothing when they are present; installs them with apt-get when run as root;
# otherwise names what is missing and exits 1.
set -euo pipefail

missing=()
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
if ! command -v mosquitto_passwd >/dev/null 2>&1 || { ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; }; then
  missing+=(mosquitto)
fi
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v sslscan >/dev/null 2>&1 || missing+=(sslscan)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
/usr/bin/python3 -c 'import paho.mqtt' >/dev/null 2>&1 || missing+=(python3-paho-mqtt)
/usr/bin/python3 -c 'import pyotp' >/dev/null 2>&1 || missing+=(python3-pyotp)
command -v fail2ban-regex >/dev/null 2>&1 || missing+=(fail2ban)
# Debian's own client (/usr/bin/docker), not another one earlier on PATH: it matches the engine.
if [ ! -x /usr/sbin/dockerd ] || [ ! -x /usr/bin/docker ] || [ ! -x /usr/bin/containerd ] || [ ! -x /usr/sbin/runc ]; then
  missing+=(docker.io)
fi
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
{ command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || missing+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ] || ! command -v mariadb-install-db >/dev/null 2>&1; then
  missing+=(mariadb-server)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: missing Debian packages: ${missing[*]} (run: sudo apt-get install -y ${missing[*]})" >&2
  exit 1
fi
echo "install-test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Maintainer scripts start services through invoke-rc.d / deb-systemd-invoke, which both obey
# policy-rc.d (exit 101 = do not start). Docker's Debian images ship one; elsewhere one is put
# in place for this install only. Without it fail2ban's postinst starts its daemon with the sshd
# jail: on a host without /var/log/auth.log that start fails and so does the install, on
# others a ban daemon would start acting on the firewall.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  trap 'exit 130' INT TERM HUP
  printf '#!/bin/sh\n# install-test-deps: no service starts during this install\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The package also enables fail2ban.service (and its SysV links) for the next boot; the tests
# only need fail2ban-regex. systemctl disable edits the links without a running systemd.
if [[ " ${missing[*]} " == *" fail2ban "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --quiet fail2ban.service 2>/dev/null || true
fi
# Likewise docker.io enables docker.service, docker.socket and (through its dependency)
# containerd.service; the container test starts its own engine in a temp dir instead.
if [[ " ${missing[*]} " == *" docker.io "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --quiet docker.service docker.socket containerd.service 2>/dev/null || true
fi
# And haproxy enables haproxy.service; the PROXY protocol test runs its own haproxy.
if [[ " ${missing[*]} " == *" haproxy "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --quiet haproxy.service 2>/dev/null || true
fi
# And nginx enables nginx.service; the test only runs nginx -t.
if [[ " ${missing[*]} " == *" nginx-light "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --quiet nginx.service 2>/dev/null || true
fi
# And redis-server enables redis-server.service; the cluster tests run their own redis-server.
if [[ " ${missing[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --quiet redis-server.service 2>/dev/null || true
fi
