"""MicroPython-safe core: Bloom filter lookup, list file parsing, LSH keys, report encoding.

Stdlib subset only: no numpy, no typing at run time, no dataclasses, % formatting. The same
code runs under CPython (as ``agent.core``) and MicroPython (as ``core``).
"""
