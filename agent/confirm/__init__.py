"""Confirmation of hits with the hub: the wire format both sides share, and the device client."""
