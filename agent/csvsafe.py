"""CSV for people: the exports a hotline or an operator opens in a spreadsheet.

Owns how a cell is written so that a spreadsheet shows it as text and never runs it: every cell is
quoted, and a text cell that starts like a formula gets a leading apostrophe (OWASP, "CSV Injection").
A hosting URL, host or entry id comes from a device or another hub; a cell such as
``=HYPERLINK(...)`` must not become a live formula on an analyst's machine. Must not touch what the
columns are (each export owns its own) or the JSON exports (they stay exact).
"""

from __future__ import annotations

import csv
import io
from typing import Iterable, Sequence

# OWASP's list (= + - @, tab, carriage return), line feed, and the full-width forms of the four
# signs, a cheap precaution against applications that fold them to the ASCII ones
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def safe_cell(value) -> str:
    """One cell's text: '' for None, numbers as they are, text that starts like a formula behind a '."""
    if value is None:
        return ""
    if isinstance(value, (bool, int, float)):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_text(columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A header and ``rows`` (one value per column) as CSV text, every cell quoted and made safe."""
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([safe_cell(v) for v in r])
    return buf.getvalue()
