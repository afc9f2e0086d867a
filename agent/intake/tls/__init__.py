"""The TLS intake: a transparent splice that checks the ClientHello's server name (``clienthello``: the
parser, no I/O; ``server``: connections)."""
