#!/bin/sh
# deps.sh - install the Debian 12 packages Signet builds and tests with.
# Idempotent: asks apt only for what is missing.  Needs root (or sudo).
set -e
PKGS="build-essential pkg-config clang libclang-rt-14-dev
libssl-dev libuv1-dev liburing-dev libhiredis-dev libc-ares-dev
python3 python3-dkim python3-nacl python3-dnspython libmail-dkim-perl
opendkim opendkim-tools openssl prometheus swaks libnet-ssleay-perl postfix
whois strace curl iproute2 util-linux nsd procps
redis-server redis-tools unbound bind9-dnsutils"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# postfix is only here for its smtp-source/smtp-sink tools and the benchmark's
# private instance: do not let it configure (and start) a system mail server.
echo "postfix postfix/main_mailer_type select No configuration" |
	$SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
