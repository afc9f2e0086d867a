"""Matching: the Scanner asks every loaded list about one body; numpy twins of the core lookups."""
