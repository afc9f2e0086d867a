"""The one exception root of gatewatch and every error class of the device (MicroPython-safe).

Each error also inherits the matching built-in, so callers may catch either. MicroPython allows
only one built-in exception base: there every error derives from the root alone, the same way for
the core, the agent and the HAL, so ``except GatewatchError`` catches all of them on both
interpreters. Messages that reach a user say what was wrong and what to do about it.
"""


class GatewatchError(Exception):
    """Root of every gatewatch error."""


try:
    class ListFormatError(GatewatchError, ValueError):
        """A list file or filter is malformed: bad magic, truncated, inconsistent parameters."""

    class DeltaError(GatewatchError, ValueError):
        """A delta is malformed, does not fit the list it is applied to, or gives the wrong result."""

    class ReportError(GatewatchError, ValueError):
        """A report is malformed or carries a field the schema does not allow."""

    class ImageError(GatewatchError, ValueError):
        """The bytes are not an image we accept (corrupt, truncated, unsupported, over a limit)."""

    class TrustError(GatewatchError, PermissionError):
        """A list failed verification: signature, key, version, expiry, digest or size cap."""

    class ConfigError(GatewatchError, ValueError):
        """A configuration value or command-line argument is invalid."""

    class ConfirmError(GatewatchError, ValueError):
        """A confirmation message, sealed record, proof or token is malformed or does not verify."""

    class CryptoUnavailable(GatewatchError, RuntimeError):
        """The group arithmetic private confirmation needs (libsodium's ristretto255) is missing."""

    class ProofError(TrustError):
        """A transparency-log proof or tree head is malformed or does not verify."""

    class UrlError(GatewatchError, ValueError):
        """A URL or host name has no canonical form: over the size limit, no host, not a web URL."""
except TypeError:  # pragma: no cover - MicroPython: one built-in base only, so the root alone
    class ListFormatError(GatewatchError):
        """A list file or filter is malformed: bad magic, truncated, inconsistent parameters."""

    class DeltaError(GatewatchError):
        """A delta is malformed, does not fit the list it is applied to, or gives the wrong result."""

    class ReportError(GatewatchError):
        """A report is malformed or carries a field the schema does not allow."""

    class ImageError(GatewatchError):
        """The bytes are not an image we accept (corrupt, truncated, unsupported, over a limit)."""

    class TrustError(GatewatchError):
        """A list failed verification: signature, key, version, expiry, digest or size cap."""

    class ConfigError(GatewatchError):
        """A configuration value or command-line argument is invalid."""

    class ConfirmError(GatewatchError):
        """A confirmation message, sealed record, proof or token is malformed or does not verify."""

    class CryptoUnavailable(GatewatchError):
        """The group arithmetic private confirmation needs (libsodium's ristretto255) is missing."""

    class ProofError(TrustError):
        """A transparency-log proof or tree head is malformed or does not verify."""

    class UrlError(GatewatchError):
        """A URL or host name has no canonical form: over the size limit, no host, not a web URL."""
