"""ReportSpool: durable, bounded, counted drops, torn writes, SIGKILL, full disk."""
from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from agent.core.errors import ConfigError
from agent.reports.spool import ReportSpool, SpoolError

from tests.paths import ROOT


def rid(i):
    return "%032x" % (i + 1)


def payload(i, size=100):
    return (b"report-%06d-" % i).ljust(size, b"x")


def test_put_pending_ack_survive_reopen(tmp_path):
    with ReportSpool(tmp_path) as sp:
        assert sp.put(rid(0), payload(0))
        assert sp.put_many([(rid(i), payload(i)) for i in range(1, 10)]) == 9
        assert len(sp) == 10
        assert sp.ack([rid(0), rid(5)]) == 2
    with ReportSpool(tmp_path) as sp:
        got = sp.pending()
        assert [r for r, _ in got] == [rid(i) for i in range(10) if i not in (0, 5)]
        assert all(p == payload(int(r, 16) - 1) for r, p in got)
        assert sp.pending(limit=3, exclude={rid(1)}) == [(rid(i), payload(i)) for i in (2, 3, 4)]
        assert rid(1) in sp and rid(0) not in sp


def test_same_id_is_stored_once(tmp_path):
    with ReportSpool(tmp_path) as sp:
        assert sp.put(rid(1), payload(1))
        assert sp.put(rid(1), payload(1))
        assert sp.put_many([(rid(2), payload(2)), (rid(2), payload(2))]) == 2
        assert len(sp) == 2
        size = sp.stats()["bytes"]
        assert sp.put(rid(1), payload(1)) and sp.stats()["bytes"] == size  # no write at all


def test_acked_segments_are_reclaimed(tmp_path):
    with ReportSpool(tmp_path, segment_bytes=1024, max_bytes=64 * 1024) as sp:
        for i in range(60):
            sp.put(rid(i), payload(i))
        assert sp.stats()["segments"] >= 5
        sp.ack([rid(i) for i in range(55)])
        files = sorted(p.name for p in tmp_path.glob("seg-*"))
        assert len(files) <= 3, files  # only the segment(s) holding 55..59 remain
        sp.ack([rid(i) for i in range(55, 60)])
        assert not list(tmp_path.glob("seg-*")) and len(sp) == 0
    with ReportSpool(tmp_path) as sp:
        assert len(sp) == 0


def test_drop_newest_is_counted_and_persisted(tmp_path):
    with ReportSpool(tmp_path, max_reports=5) as sp:
        stored = [sp.put(rid(i), payload(i)) for i in range(8)]
        assert stored == [True] * 5 + [False] * 3
        assert sp.stats()["dropped"] == 3
        assert [r for r, _ in sp.pending()] == [rid(i) for i in range(5)]
        sp.ack([rid(0)])
        assert sp.put(rid(100), payload(100))
    with ReportSpool(tmp_path, max_reports=5) as sp:
        assert sp.stats()["dropped"] == 3
        assert len(sp) == 5


def test_drop_oldest_drops_whole_oldest_segment_and_counts(tmp_path):
    with ReportSpool(tmp_path, max_bytes=4096, segment_bytes=1024, policy="drop-oldest") as sp:
        for i in range(100):
            assert sp.put(rid(i), payload(i))
        st = sp.stats()
        assert st["bytes"] <= 4096
        kept = [int(r, 16) - 1 for r, _ in sp.pending()]
        assert kept == list(range(100 - len(kept), 100))  # the newest survive, in order
        assert st["dropped"] == 100 - len(kept) > 0


def test_bytes_bound_holds(tmp_path):
    with ReportSpool(tmp_path, max_bytes=8192, segment_bytes=2048) as sp:
        n = sum(sp.put(rid(i), payload(i, 500)) for i in range(100))
        assert sp.stats()["bytes"] <= 8192
        assert sp.stats()["dropped"] == 100 - n > 0
        assert sum(p.stat().st_size for p in tmp_path.glob("seg-*.log")) <= 8192


def test_torn_tail_is_cut_and_earlier_records_survive(tmp_path):
    with ReportSpool(tmp_path) as sp:
        sp.put_many([(rid(i), payload(i)) for i in range(5)])
    log = next(tmp_path.glob("seg-*.log"))
    data = log.read_bytes()
    log.write_bytes(data[:-30])  # the last record torn, as by a power cut mid-append
    with ReportSpool(tmp_path) as sp:
        assert [r for r, _ in sp.pending()] == [rid(i) for i in range(4)]
        assert sp.stats()["recovered_bytes"] > 0
        assert sp.put(rid(9), payload(9))
    with ReportSpool(tmp_path) as sp:
        assert [r for r, _ in sp.pending()] == [rid(i) for i in range(4)] + [rid(9)]


def test_bit_rot_loses_only_the_damaged_record(tmp_path):
    with ReportSpool(tmp_path) as sp:
        sp.put_many([(rid(i), payload(i)) for i in range(5)])
    log = next(tmp_path.glob("seg-*.log"))
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0x40
    log.write_bytes(bytes(data))
    with ReportSpool(tmp_path) as sp:
        ids = [r for r, _ in sp.pending()]
        assert len(ids) == 4 and ids == sorted(ids)
        assert all(p == payload(int(r, 16) - 1) for r, p in sp.pending())


def test_torn_ack_entry_is_ignored(tmp_path):
    with ReportSpool(tmp_path) as sp:
        sp.put_many([(rid(i), payload(i)) for i in range(4)])
        sp.ack([rid(0)])
    ack = next(tmp_path.glob("seg-*.ack"))
    ack.write_bytes(ack.read_bytes() + bytes.fromhex(rid(1))[:7])  # half an ack entry
    with ReportSpool(tmp_path) as sp:
        assert [r for r, _ in sp.pending()] == [rid(1), rid(2), rid(3)]


def test_acks_after_a_torn_ack_entry_still_count(tmp_path):
    with ReportSpool(tmp_path) as sp:
        sp.put_many([(rid(i), payload(i)) for i in range(5)])
        sp.ack([rid(0)])
    ack = next(tmp_path.glob("seg-*.ack"))
    ack.write_bytes(ack.read_bytes() + bytes.fromhex(rid(1))[:7])  # SIGKILL mid-append
    with ReportSpool(tmp_path) as sp:
        sp.ack([rid(2), rid(3)])  # appended after the torn entry
    with ReportSpool(tmp_path) as sp:
        assert [r for r, _ in sp.pending()] == [rid(1), rid(4)]


def test_torn_tail_is_cut_even_with_a_newer_orphan_ack(tmp_path):
    with ReportSpool(tmp_path) as sp:
        sp.put_many([(rid(i), payload(i)) for i in range(5)])
    log = next(tmp_path.glob("seg-*.log"))
    log.write_bytes(log.read_bytes()[:-30])
    no = int(log.name[4:-4])
    (tmp_path / ("seg-%08d.ack" % (no + 1))).write_bytes(b"")  # crash between a reclaim's unlinks
    with ReportSpool(tmp_path) as sp:
        assert sp.stats()["recovered_bytes"] > 0
        assert sp.put(rid(9), payload(9))
    with ReportSpool(tmp_path) as sp:
        assert sp.stats()["recovered_bytes"] == 0  # the new record followed valid data
        assert [r for r, _ in sp.pending()] == [rid(i) for i in range(4)] + [rid(9)]


def test_same_id_stored_again_after_its_ack_is_pending_after_reopen(tmp_path):
    with ReportSpool(tmp_path, segment_bytes=1024) as sp:
        sp.put_many([(rid(i), payload(i)) for i in range(12)])  # two segments
        sp.ack([rid(0)])
        assert sp.put(rid(0), payload(0))  # a hit redone after a restart: the same report id
    with ReportSpool(tmp_path, segment_bytes=1024) as sp:
        assert sorted(r for r, _ in sp.pending()) == sorted(rid(i) for i in range(12))
        assert sp.ack([rid(i) for i in range(12)]) == 12
        assert not list(tmp_path.glob("seg-*"))  # every segment reclaimed, none leaked


def test_bad_input_is_refused_and_changes_nothing(tmp_path):
    with pytest.raises(ConfigError):
        ReportSpool(tmp_path, policy="drop-random")
    with pytest.raises(ConfigError):
        ReportSpool(tmp_path, max_bytes=1000)
    with ReportSpool(tmp_path) as sp:
        sp.put(rid(1), payload(1))
        for bad in ("xyz", "00" * 15, b"short"):
            with pytest.raises(ValueError):
                sp.put(bad, b"p")
        with pytest.raises(ValueError):
            sp.put_many([(rid(2), b"ok"), (rid(3), b"x" * (65 * 1024))])
        assert [r for r, _ in sp.pending()] == [rid(1)]


def test_one_process_per_spool(tmp_path):
    with ReportSpool(tmp_path):
        with pytest.raises(SpoolError, match="in use by another process"):
            ReportSpool(tmp_path)
    ReportSpool(tmp_path).close()  # released on close (and by the kernel on SIGKILL)


def test_injected_disk_error_leaves_spool_intact(tmp_path, monkeypatch):
    sp = ReportSpool(tmp_path)
    sp.put_many([(rid(i), payload(i)) for i in range(3)])
    real_fsync = os.fsync

    def broken_fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(SpoolError, match="No space left.*nothing was stored"):
        sp.put(rid(7), payload(7))
    assert rid(7) not in sp and sp.stats()["write_errors"] == 1
    monkeypatch.setattr(os, "fsync", real_fsync)
    sp.close()
    with ReportSpool(tmp_path) as sp:
        assert [r for r, _ in sp.pending()] == [rid(i) for i in range(3)]
        assert sp.stats()["recovered_bytes"] == 0


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (%s); the injected-error test covers ENOSPC"
                    % r.stderr.strip())
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_real_full_disk_is_a_clear_error_and_corrupts_nothing(tiny_tmpfs):
    folder = tiny_tmpfs / "spool"
    sp = ReportSpool(folder, max_bytes=10 * 1024 * 1024, segment_bytes=16 * 1024)
    stored = []
    with pytest.raises(SpoolError) as err:
        for i in range(10000):
            sp.put(rid(i), payload(i, 700))
            stored.append(rid(i))
    assert err.value.errno == errno.ENOSPC
    assert "nothing was stored" in str(err.value) or "cannot create spool segment" in str(err.value)
    assert len(stored) > 20
    sp.close()
    with ReportSpool(folder, max_bytes=10 * 1024 * 1024, segment_bytes=16 * 1024) as sp:
        got = sp.pending()
        assert [r for r, _ in got] == stored
        assert all(p == payload(int(r, 16) - 1, 700) for r, p in got)
        sp.ack(stored[: len(stored) // 2])  # frees whole segments
        assert sp.put(rid(50000), payload(50000, 700))


WRITER = textwrap.dedent("""
    import sys, time
    from agent.reports.spool import ReportSpool
    sp = ReportSpool(sys.argv[1], max_bytes=64 * 1024 * 1024, max_reports=10 ** 6, segment_bytes=32 * 1024)
    i = int(sys.argv[2])
    while True:
        batch = [("%032x" % (i + k + 1), (b"report-%06d-" % (i + k)).ljust(300, b"y")) for k in range(3)]
        if sp.put_many(batch) != len(batch):
            # refused by the drop policy (a fast disk filled the spool): "stored" would be a lie
            print("full", i, flush=True)
            while True:
                time.sleep(1)
        if i % 9 == 0:
            print("acked", i, flush=True)  # before: a kill right after the ack must not look like loss
            sp.ack(["%032x" % (i + 1)])
        print("stored", i + 2, flush=True)
        i += 3
""")


def complete_lines(out):
    """The lines the writer finished printing (SIGKILL may cut the last one, e.g. "stored 12")."""
    lines = out.split("\n")
    return lines[:-1]  # the last piece is "" after a final newline, or a torn line


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing_stored(tmp_path):
    folder = tmp_path / "spool"
    rng = random.Random(1234)
    stored_upto, acked = -1, set()
    start = 0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for round_ in range(8):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), str(start)],
                             stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        time.sleep(0.4 + rng.random() * 0.4)
        p.send_signal(signal.SIGKILL)
        out, _ = p.communicate()
        for line in complete_lines(out):
            word, n = line.split()
            if word == "stored":
                stored_upto = max(stored_upto, int(n))
            elif word == "acked":
                acked.add(int(n))
        with ReportSpool(folder, max_bytes=64 * 1024 * 1024, max_reports=10 ** 6,
                         segment_bytes=32 * 1024) as sp:
            got = sp.pending()
            have = {int(r, 16) - 1 for r, _ in got}
            for r, p_ in got:
                i = int(r, 16) - 1
                assert p_ == (b"report-%06d-" % i).ljust(300, b"y")
            # every report whose put() returned is there unless its ack was recorded
            missing = [i for i in range(stored_upto + 1) if i not in have and i not in acked]
            assert not missing, (round_, missing[:10])
            start = max(have | acked | {stored_upto}) + 1
            start += (3 - start % 3) % 3  # keep the writer's ack pattern aligned
    assert stored_upto > 100
