"""The DNS intake: a forwarder that dnsmasq forwards to (``message``: wire format, ``server``: I/O)."""
