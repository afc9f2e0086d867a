"""Hashing: untrusted bytes become digests and perceptual hashes, within limits (imaging, pdq, samples)."""
