"""Built-in HTTP/1.1 proxy intake (explicit and transparent), for gateways with no Squid."""
