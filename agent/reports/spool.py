"""ReportSpool: the on-disk queue every report enters before it is published.

Owns the spool folder and nothing else: it stores opaque report payloads under their report ids and
forgets them when told they were acknowledged. It does not publish (agent.reports.reporter) nor build reports
(agent.core.report).

Layout, and why (few flash writes, power-safe):

    seg-00000001.log   append-only records:  "GR" | u32 length | u32 crc32 | 16-byte id | payload
    seg-00000001.ack   append-only acks:     16-byte id | u32 crc32(id)
    stats              the persistent drop counters (atomic replace, written rarely)
    lock               flock()ed while a process owns the spool

A file per report (write temp, fsync, rename, fsync directory, later unlink) costs several metadata
updates per report; on the log-structured file systems of routers (UBIFS, JFFS2) every one of them
is a flash program. An append log costs one append + fsync per batch of reports and one per batch of
acknowledgements, and a whole segment is reclaimed with two unlinks once every report in it is
acknowledged. Power safety comes from the checksums: a torn append (power cut, SIGKILL, ENOSPC) is a
record whose CRC does not match; it is cut off on the next open, the records before it are intact.
An ack lost by a crash only means the report is published again: report ids make that idempotent
at the hub.

Bounded: at most ``max_reports`` reports awaiting acknowledgement and ``max_bytes`` of segment files.
When full, the drop policy decides, and every dropped report is counted (``stats()['dropped']``,
persisted): ``drop-newest`` (default) refuses the new report, so that reports already promised stay
and a flood of hits cannot flush out earlier evidence, and costs no write; ``drop-oldest`` deletes the
oldest segment, favouring current material. The drop counter is written at the first drop, then at
most once per ``stats_interval`` and on close (a counter is not worth a flash write per report);
a SIGKILL in a flood may lose the count of the last interval, never a stored report.
"""
from __future__ import annotations

import binascii
import errno
import os
import struct
import threading
import time
from collections import OrderedDict

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None

from agent.core.errors import ConfigError, GatewatchError

MAGIC = b"GR"
_HEAD = struct.Struct("<2sII")     # magic, payload length, crc32(id + payload)
_ACK = struct.Struct("<16sI")      # id, crc32(id)
ID_BYTES = 16
MAX_PAYLOAD = 64 * 1024
POLICIES = ("drop-newest", "drop-oldest")


class SpoolError(GatewatchError, OSError):
    """The spool could not be written or opened (full disk, permissions, held by another process)."""


def _id_bytes(report_id):
    if isinstance(report_id, (bytes, bytearray)) and len(report_id) == ID_BYTES:
        return bytes(report_id)
    try:
        raw = bytes.fromhex(report_id)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != ID_BYTES:
        raise ValueError("report id %r must be %d hex chars" % (report_id, 2 * ID_BYTES))
    return raw


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Segment:
    __slots__ = ("no", "log", "ack", "size", "live", "acked")

    def __init__(self, folder, no):
        self.no = no
        self.log = os.path.join(folder, "seg-%08d.log" % no)
        self.ack = os.path.join(folder, "seg-%08d.ack" % no)
        self.size = 0
        self.live = set()
        self.acked = set()


class ReportSpool:
    """Bounded, power-safe on-disk queue of report payloads keyed by report id.

    ``put()`` returns once the payload is on disk (fsync'd); ``pending()`` lists what awaits
    acknowledgement, oldest first; ``ack()`` forgets ids. Thread-safe; one process per folder.
    """

    def __init__(self, folder, *, max_bytes=1024 * 1024, max_reports=10000,
                 segment_bytes=64 * 1024, policy="drop-newest", stats_interval=60.0,
                 clock=time.monotonic, readonly=False):
        if policy not in POLICIES:
            raise ConfigError("spool policy %r unknown; use one of %s" % (policy, ", ".join(POLICIES)))
        if max_reports < 1 or segment_bytes < 1024 or max_bytes < 2 * segment_bytes:
            raise ConfigError("spool limits: need max_reports >= 1, segment_bytes >= 1024 and "
                              "max_bytes >= 2 * segment_bytes (got %d, %d, %d)"
                              % (max_reports, segment_bytes, max_bytes))
        self.folder = str(folder)
        self.max_bytes = max_bytes
        self.max_reports = max_reports
        self.segment_bytes = segment_bytes
        self.policy = policy
        self._stats_interval = stats_interval
        self._clock = clock
        self._lock = threading.RLock()
        self._index = OrderedDict()   # id bytes -> (segment, offset, length)
        self._segments = OrderedDict()  # no -> _Segment, oldest first
        self._dropped = 0
        self._recovered_bytes = 0
        self._write_errors = 0
        self._stats_written_at = None
        self._stats_dirty = False
        self._lockfd = None
        self.readonly = readonly
        if readonly:
            # a reader beside the running agent (`gatewatch reports export`): no lock, no repair,
            # no write of any kind; a torn tail is skipped, not cut
            if not os.path.isdir(self.folder):
                raise SpoolError(errno.ENOENT, "no spool folder %s" % self.folder)
            self._load()
            return
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as exc:
            raise SpoolError(exc.errno, "cannot create spool folder %s: %s" % (self.folder, exc.strerror))
        self._take_lock()
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    # open/recover -------------------------------------------------------------------------
    def _take_lock(self):
        if fcntl is None:
            return
        path = os.path.join(self.folder, "lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(exc.errno, "cannot open spool lock %s: %s" % (path, exc.strerror))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolError(errno.EBUSY, "spool %s is in use by another process; run one agent per "
                                          "spool folder" % self.folder)
        self._lockfd = fd

    def _load(self):
        nos = set()
        for name in os.listdir(self.folder):
            if name.startswith("seg-") and name[-4:] in (".log", ".ack"):
                try:
                    nos.add(int(name[4:-4]))
                except ValueError:
                    continue
            elif name.endswith(".tmp") and not self.readonly:
                os.unlink(os.path.join(self.folder, name))  # a stats replace that never finished
        self._read_stats()
        logs = []
        for no in sorted(nos):
            seg = _Segment(self.folder, no)
            if not os.path.exists(seg.log):
                if not self.readonly:
                    os.unlink(seg.ack)  # crash between the two unlinks of a reclaimed segment
                continue
            logs.append(seg)
        for seg in logs:
            self._segments[seg.no] = seg
            acked = self._read_acks(seg)
            # the newest log is where appends continue, even if a higher-numbered orphan ack existed
            self._scan(seg, acked, last=(seg is logs[-1]))
            seg.acked = acked & seg.live
            seg.live -= acked
            for rid in seg.acked:
                # an ack speaks for this segment's record only: the same id stored again later
                # (a hit redone after a restart) lives in a newer segment and still awaits its ack
                if self._index.get(rid, (None,))[0] is seg:
                    del self._index[rid]
        for seg in list(self._segments.values())[:-1]:
            if not seg.live and not self.readonly:
                self._reclaim(seg)

    def _read_acks(self, seg):
        acked = set()
        try:
            with open(seg.ack, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return acked
        pos, n = 0, len(data)
        while pos + _ACK.size <= n:
            rid, crc = _ACK.unpack_from(data, pos)
            if binascii.crc32(rid) == crc:
                acked.add(rid)
                pos += _ACK.size
            else:
                pos += 1  # a torn entry (later entries were appended after it): resynchronise
        return acked

    def _scan(self, seg, acked, last):
        with open(seg.log, "rb") as f:
            data = f.read()
        pos, good_end, n = 0, 0, len(data)
        while pos + _HEAD.size + ID_BYTES <= n:
            magic, length, crc = _HEAD.unpack_from(data, pos)
            start = pos + _HEAD.size
            end = start + ID_BYTES + length
            if magic == MAGIC and length <= MAX_PAYLOAD and end <= n and \
                    binascii.crc32(data[start:end]) == crc:
                rid = bytes(data[start:start + ID_BYTES])
                if rid not in self._index:
                    seg.live.add(rid)
                    self._index[rid] = (seg, start + ID_BYTES, length)
                pos = good_end = end
                continue
            # not a valid record here: bit rot or a torn append; look for the next record start
            nxt = data.find(MAGIC, pos + 1)
            if nxt < 0:
                break
            self._recovered_bytes += nxt - pos
            pos = nxt
        if good_end < n:
            self._recovered_bytes += n - good_end
            if last and not self.readonly:  # cut the torn tail so that new appends follow valid data
                with open(seg.log, "r+b") as f:
                    f.truncate(good_end)
                    os.fsync(f.fileno())
                n = good_end
        seg.size = n

    def _read_stats(self):
        try:
            with open(os.path.join(self.folder, "stats"), "r") as f:
                for line in f:
                    key, _, value = line.partition("=")
                    if key.strip() == "dropped":
                        self._dropped = int(value.strip())
        except (OSError, ValueError):
            pass

    def _write_stats(self):
        path = os.path.join(self.folder, "stats")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("dropped=%d\n" % self._dropped)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(self.folder)
        self._stats_written_at = self._clock()
        self._stats_dirty = False

    def _maybe_write_stats(self):
        now = self._clock()
        if self._stats_written_at is None or now - self._stats_written_at >= self._stats_interval:
            try:
                self._write_stats()
            except OSError:
                self._write_errors += 1  # the counter stays in memory and is retried later
        else:
            self._stats_dirty = True

    # public API ----------------------------------------------------------------------------
    def put(self, report_id, payload):
        """Store one report durably; False if the drop policy refused it (counted)."""
        return self.put_many([(report_id, payload)]) == 1

    def put_many(self, items):
        """Store reports with one write and one fsync; returns how many were stored.

        Ids already in the spool are not stored again (idempotent). Raises SpoolError, with nothing
        stored and the spool intact, if the disk refuses the write (full, read-only).
        """
        if self.readonly:
            raise SpoolError(errno.EROFS, "spool %s was opened read-only" % self.folder)
        records = []
        for report_id, payload in items:
            rid = _id_bytes(report_id)
            payload = bytes(payload)
            if len(payload) > MAX_PAYLOAD:
                raise ValueError("report payload of %d bytes is over the %d-byte limit"
                                 % (len(payload), MAX_PAYLOAD))
            records.append((rid, payload))
        with self._lock:
            stored, dropped, batch, seen = 0, 0, [], set()
            live = len(self._index)
            size = self._disk_bytes()
            for rid, payload in records:
                if rid in self._index or rid in seen:
                    stored += 1  # already queued: idempotent
                    continue
                need = _HEAD.size + ID_BYTES + len(payload)
                while live + 1 > self.max_reports or size + need > self.max_bytes:
                    if self.policy == "drop-oldest" and self._drop_oldest_segment():
                        live, size = len(self._index) + len(batch), self._disk_bytes() + \
                            sum(_HEAD.size + ID_BYTES + len(p) for _, p in batch)
                        continue
                    break
                if live + 1 > self.max_reports or size + need > self.max_bytes:
                    dropped += 1
                    continue
                batch.append((rid, payload))
                seen.add(rid)
                live += 1
                size += need
            if batch:
                self._append(batch)
                stored += len(batch)
            if dropped:
                self._dropped += dropped
                self._maybe_write_stats()
            return stored

    def _disk_bytes(self):
        return sum(s.size for s in self._segments.values())

    def _active(self, need):
        seg = next(reversed(self._segments.values()), None) if self._segments else None
        if seg is None or (seg.size and seg.size + need > self.segment_bytes):
            no = seg.no + 1 if seg else 1
            seg = _Segment(self.folder, no)
            created = False
            try:
                fd = os.open(seg.log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                created = True
                os.close(fd)
                _fsync_dir(self.folder)
            except OSError as exc:
                self._write_errors += 1
                if created:  # never delete a file this call did not create (EEXIST)
                    try:
                        os.unlink(seg.log)
                    except OSError:
                        pass
                raise SpoolError(exc.errno, "cannot create spool segment %s: %s; free space or "
                                            "lower spool.max_bytes" % (seg.log, exc.strerror))
            self._segments[no] = seg
        return seg

    def _append(self, batch):
        blob = bytearray()
        need = sum(_HEAD.size + ID_BYTES + len(p) for _, p in batch)
        seg = self._active(need)
        offsets = []
        for rid, payload in batch:
            body = rid + payload
            offsets.append(seg.size + len(blob) + _HEAD.size + ID_BYTES)
            blob += _HEAD.pack(MAGIC, len(payload), binascii.crc32(body)) + body
        try:
            with open(seg.log, "r+b") as f:
                f.seek(seg.size)
                try:
                    f.write(blob)
                    f.flush()
                    os.fsync(f.fileno())
                except OSError:
                    # leave no torn record behind; the records before stay valid either way
                    try:
                        f.truncate(seg.size)
                        os.fsync(f.fileno())
                    except OSError:
                        pass
                    raise
        except OSError as exc:
            self._write_errors += 1
            raise SpoolError(exc.errno, "cannot write %d report(s) to the spool %s: %s; nothing was "
                                        "stored, free space or lower spool.max_bytes"
                             % (len(batch), self.folder, exc.strerror or exc))
        for (rid, payload), off in zip(batch, offsets):
            seg.live.add(rid)
            self._index[rid] = (seg, off, len(payload))
        seg.size += len(blob)

    def pending(self, limit=None, exclude=()):
        """Up to ``limit`` (report_id hex, payload) awaiting acknowledgement, oldest first."""
        with self._lock:
            out = []
            handles = {}
            try:
                for rid, (seg, off, length) in self._index.items():
                    if limit is not None and len(out) >= limit:
                        break
                    hid = rid.hex()
                    if hid in exclude:
                        continue
                    f = handles.get(seg.no)
                    if f is None:
                        f = handles[seg.no] = open(seg.log, "rb")
                    f.seek(off)
                    out.append((hid, f.read(length)))
            finally:
                for f in handles.values():
                    f.close()
            return out

    def ack(self, report_ids):
        """Forget acknowledged reports (one append + fsync per segment touched); returns how many."""
        by_seg = {}
        if self.readonly:
            raise SpoolError(errno.EROFS, "spool %s was opened read-only" % self.folder)
        with self._lock:
            for report_id in report_ids:
                rid = _id_bytes(report_id)
                entry = self._index.get(rid)
                if entry is not None:
                    by_seg.setdefault(entry[0].no, []).append(rid)
            done = 0
            for no, rids in by_seg.items():
                seg = self._segments[no]
                fully = len(set(rids)) == len(seg.live)
                if not fully:
                    blob = b"".join(_ACK.pack(r, binascii.crc32(r)) for r in rids)
                    try:
                        with open(seg.ack, "ab", buffering=0) as f:
                            start = f.seek(0, os.SEEK_END)
                            try:
                                view = memoryview(blob)
                                while view:
                                    view = view[f.write(view):]
                                os.fsync(f.fileno())
                            except OSError:
                                try:  # leave no torn entry for the next appends to follow
                                    f.truncate(start)
                                except OSError:
                                    pass
                                raise
                    except OSError:
                        # not recorded: the reports go out again after a restart (idempotent ids)
                        self._write_errors += 1
                for r in rids:
                    if r in seg.live:
                        seg.live.discard(r)
                        seg.acked.add(r)
                        self._index.pop(r, None)
                        done += 1
                if not seg.live:
                    self._reclaim(seg)
            if self._stats_dirty:
                self._maybe_write_stats()
            return done

    def _reclaim(self, seg):
        """Delete a segment none of whose reports awaits acknowledgement (log first, then acks)."""
        for path in (seg.log, seg.ack):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                self._write_errors += 1
                return
        self._segments.pop(seg.no, None)
        try:
            _fsync_dir(self.folder)
        except OSError:
            pass

    def _drop_oldest_segment(self):
        if not self._segments:
            return False
        seg = next(iter(self._segments.values()))
        n = len(seg.live)
        for rid in seg.live:
            self._index.pop(rid, None)
        seg.live = set()
        self._dropped += n
        self._reclaim(seg)
        return True

    def __len__(self):
        with self._lock:
            return len(self._index)

    def __contains__(self, report_id):
        with self._lock:
            return _id_bytes(report_id) in self._index

    def stats(self):
        """depth, bytes on disk, segments, dropped (persistent), write_errors, recovered_bytes."""
        with self._lock:
            return {"depth": len(self._index), "bytes": self._disk_bytes(),
                    "segments": len(self._segments), "dropped": self._dropped,
                    "write_errors": self._write_errors, "recovered_bytes": self._recovered_bytes,
                    "policy": self.policy, "max_reports": self.max_reports, "max_bytes": self.max_bytes}

    def close(self):
        """Persist the counters and release the folder."""
        with self._lock:
            if self._stats_dirty:
                try:
                    self._write_stats()
                except OSError:
                    pass
            if self._lockfd is not None:
                os.close(self._lockfd)
                self._lockfd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
