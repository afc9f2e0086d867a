"""PendingHits: the on-disk record of hits that no hub could confirm (yet), for the operator.

Owns the folder ``<state_dir>/pending`` (a ReportSpool of its own, so power-safe and bounded the same
way) and what a pending record holds: only what a report may hold, and less:

    {"id", "source", "list", "version", "signal", "distance" (or null), "entry" (or null: unknown
     until the hub confirms), "hosting" (as ``reports.hosting`` allows), "time" (the hour)}

Never a hash of the image (perceptual or exact), never its short keys, never anything about the
client. Such a record can therefore not be confirmed by the hub later: while the agent runs, the
policy keeps the hit in memory and asks the hub again (``policy.reconfirm_hours``); a hit the hub
confirms becomes a report (and leaves this folder), one it refutes or that expires is deleted here
too. What is left after a restart stays here for ``gatewatch reports export`` (the operator decides
what to hand to the hotline); it is never sent as a report, because an unconfirmed hit is no report.

Must not touch: the report spool (agent.reports.spool holds confirmed reports), the decision.
"""
from __future__ import annotations

import json
import logging
import os

from agent.core.errors import GatewatchError
from agent.core.report import hosting_from_url, iso_hour, new_report_id, _unix_now
from agent.reports.spool import ReportSpool

log = logging.getLogger("gatewatch.pending")

KEYS = ("id", "source", "list", "version", "signal", "distance", "entry", "hosting", "time")


def pending_record(result, url, hosting_mode, now=None):
    """The record of an unconfirmed hit: the best hit's list, version, signal, distance, entry id
    if known, hosting as configured, hour. Nothing else of ``result`` (no hashes, no keys)."""
    hit = result.best
    try:
        hosting = hosting_from_url(url, hosting_mode) if url else {}
    except GatewatchError:
        hosting = {}
    return {"id": new_report_id(), "source": hit.list.source, "list": hit.list.name,
            "version": int(hit.list.version), "signal": hit.list.signal,
            "distance": hit.distance, "entry": hit.entry_id, "hosting": hosting,
            "time": iso_hour(_unix_now() if now is None else now)}


class PendingHits:
    """Durable, bounded record of pending (unconfirmed) hits; ``add`` returns the record id."""

    def __init__(self, folder, hosting="url-noquery", max_records=1000, max_bytes=256 * 1024):
        self.hosting = hosting
        self.spool = ReportSpool(folder, max_reports=max(1, int(max_records)),
                                 max_bytes=max(max_bytes, 2 * 16 * 1024), segment_bytes=16 * 1024)

    def add(self, result, url):
        """Store the record of one unconfirmed hit; its id, or None if it could not be stored."""
        rec = pending_record(result, url, self.hosting)
        try:
            if self.spool.put(rec["id"], json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()):
                return rec["id"]
        except (OSError, ValueError) as exc:
            log.error("could not record a pending hit: %s", exc)
        return None

    def resolve(self, record_id):
        """Forget a record: the hub confirmed (now a report), refuted it, or it expired."""
        if record_id:
            try:
                self.spool.ack([record_id])
            except OSError as exc:
                log.error("could not forget a pending hit: %s", exc)

    def __len__(self):
        return len(self.spool)

    def stats(self):
        s = self.spool.stats()
        return {"depth": s["depth"], "dropped": s["dropped"]}

    def close(self):
        self.spool.close()


def read_records(state_dir):
    """(state, record) pairs a state folder holds, without taking the running agent's lock:
    ``unsent`` confirmed reports (spool/) and ``pending`` unconfirmed hits (pending/), oldest first."""
    out = []
    for sub, state in (("spool", "unsent"), ("pending", "pending")):
        folder = os.path.join(state_dir, sub)
        if not os.path.isdir(folder):
            continue
        sp = ReportSpool(folder, readonly=True)
        try:
            for _rid, payload in sp.pending():
                try:
                    rec = json.loads(payload.decode("utf-8"))
                except (ValueError, UnicodeError):
                    continue
                if isinstance(rec, dict):
                    out.append((state, rec))
        finally:
            sp.close()
    return out
