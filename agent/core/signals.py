"""The signal types a list can hold, and the length of their hashes (MicroPython-safe).

Why strings: a signal's name is the key in list manifests, topics, reports and file names, so the
same short word travels everywhere unchanged.
"""

BYTE_SIGNALS = ("sha256", "sha1", "md5")  # digests of a body's bytes
# url and domain: the SHA-256 of a canonical URL or host expression (agent.core.urlcanon). They are
# exact signals like the byte digests: a Bloom hit is near-certain, confirmed by equality of digests.
NAME_SIGNALS = ("url", "domain")
EXACT_SIGNALS = BYTE_SIGNALS + NAME_SIGNALS
PERCEPTUAL_SIGNALS = ("pdq", "neural")  # neural: 128-bit code of agent.hashing.neural
SIGNALS = EXACT_SIGNALS + PERCEPTUAL_SIGNALS
HASH_BYTES = {"sha256": 32, "sha1": 20, "md5": 16, "url": 32, "domain": 32, "pdq": 32, "neural": 16}
HEX_LENGTHS = dict((k, 2 * v) for k, v in HASH_BYTES.items())
