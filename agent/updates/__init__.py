"""List updates over MQTT: announcements, chunks and deltas, verified and installed."""
