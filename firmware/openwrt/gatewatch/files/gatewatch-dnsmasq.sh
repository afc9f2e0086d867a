#!/bin/sh
# gatewatch on OpenWrt: make dnsmasq ask gatewatch's DNS forwarder first (url/domain lists at the
# resolver), or stop doing so. Installed as /usr/libexec/gatewatch-dnsmasq; run once after setting
# gatewatch.intake.dns=1:
#
#     /usr/libexec/gatewatch-dnsmasq enable     # server=127.0.0.1#5353 first, strict-order
#     /usr/libexec/gatewatch-dnsmasq disable
#
# dnsmasq keeps its usual upstreams (the WAN's, from /tmp/resolv.conf.d/resolv.conf.auto) after the
# forwarder: strict-order makes it ask them in order, so the forwarder sees every query it does not
# answer from its cache. If the agent is down, dnsmasq moves to the next server when a client asks
# again (about 1-2 s per uncached name) until procd has restarted the agent: resolution never stops,
# and nothing is checked meanwhile. The forwarder itself asks the WAN's resolvers (the same file).
set -e
PORT="${GATEWATCH_DNS_PORT:-5353}"
SERVER="127.0.0.1#$PORT"
DNSMASQ_INIT="${GATEWATCH_DNSMASQ_INIT:-/etc/init.d/dnsmasq}"  # a stand-in in tests

case "$1" in
	enable)
		uci -q del_list dhcp.@dnsmasq[0].server="$SERVER" || true
		uci add_list dhcp.@dnsmasq[0].server="$SERVER"
		uci set dhcp.@dnsmasq[0].strictorder='1'
		uci commit dhcp
		"$DNSMASQ_INIT" restart
		;;
	disable)
		uci -q del_list dhcp.@dnsmasq[0].server="$SERVER" || true
		uci -q delete dhcp.@dnsmasq[0].strictorder || true
		uci commit dhcp
		"$DNSMASQ_INIT" restart
		;;
	*)
		echo "usage: $0 enable|disable" >&2
		exit 2
		;;
esac
