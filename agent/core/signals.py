"""The signal types a list can hold, and the length of their hashes (MicroPython-safe).

Why strings: a signal's name is the key in list manifests, topics, reports and file names, so the
same short word travels everywhere unchanged.
"""

EXACT_SIGNALS = ("sha256", "sha1", "md5")
PERCEPTUAL_SIGNALS = ("pdq", "neural")  # neural: 128-bit code of agent.hashing.neural
SIGNALS = EXACT_SIGNALS + PERCEPTUAL_SIGNALS
HASH_BYTES = {"sha256": 32, "sha1": 20, "md5": 16, "pdq": 32, "neural": 16}
HEX_LENGTHS = dict((k, 2 * v) for k, v in HASH_BYTES.items())
