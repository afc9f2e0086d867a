"""gatewatch device agent: intake -> hashing -> matching -> policy -> action + report."""

__version__ = "0.1.0"
