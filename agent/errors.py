"""The one exception root of gatewatch; each error also inherits the matching built-in.

Messages that reach a user say what was wrong and what to do about it.
"""

try:
    from agent.core.errors import GatewatchError, ListFormatError
except ImportError:  # pragma: no cover - MicroPython path imports core directly
    from core.errors import GatewatchError, ListFormatError


class ImageError(GatewatchError, ValueError):
    """The bytes are not an image we accept (corrupt, truncated, unsupported, over a limit)."""


class TrustError(GatewatchError, PermissionError):
    """A list failed verification: signature, key, version, expiry, digest or size cap."""


class ConfigError(GatewatchError, ValueError):
    """A configuration value or command-line argument is invalid."""


__all__ = ["GatewatchError", "ListFormatError", "ImageError", "TrustError", "ConfigError"]
