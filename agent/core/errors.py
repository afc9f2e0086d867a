"""Exception root shared by the core and the full agent (MicroPython-safe)."""


class GatewatchError(Exception):
    """Root of every gatewatch error."""


try:
    class ListFormatError(GatewatchError, ValueError):
        """A list file or filter is malformed: bad magic, truncated, inconsistent parameters."""
except TypeError:  # pragma: no cover - MicroPython allows only one built-in exception base
    class ListFormatError(ValueError):
        """A list file or filter is malformed: bad magic, truncated, inconsistent parameters."""
