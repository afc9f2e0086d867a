"""Exception root shared by the core and the full agent (MicroPython-safe)."""


class GatewatchError(Exception):
    """Root of every gatewatch error."""


class ListFormatError(GatewatchError, ValueError):
    """A list file or filter is malformed: bad magic, truncated, inconsistent parameters."""
