"""ICAP intake (RFC 3507): protocol without I/O in ``protocol``, the asyncio service in ``server``."""
