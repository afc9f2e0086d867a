"""The test cluster really is one broker, and the partition leases split and hand over partitions.

What the fleet tests rely on, each shown on the real 3-node aedes cluster: a message published on
one node reaches subscribers on the others, retained messages and a persistent session's offline
QoS 1 messages are there on whichever node a client comes back to, payloads over 128 KiB are
refused as on the shipped mosquitto, and there is no ``$share``. Then tools/partitions.py on both
deployments: instances split the partitions, a new one takes its share, one that leaves hands its
share over, and junk on the lease topics changes nothing.
"""
from __future__ import annotations

import json
import queue
import time

import pytest

from agent.core.errors import ConfigError
from agent.mqtt import MAX_PAYLOAD, Message, MqttClient, Topics, wait_all
from tools.partitions import PartitionLease, assign, member_will, split_topics


def _drain(q, wait=0.5, most=10.0):
    """What arrives until ``wait`` seconds of silence (or ``most`` seconds in all)."""
    out = []
    end = time.monotonic() + most
    try:
        while time.monotonic() < end:
            out.append(q.get(timeout=wait))
    except queue.Empty:
        pass
    return out


@pytest.mark.slow
def test_three_nodes_are_one_broker(aedes_cluster):
    u = aedes_cluster.urls
    got, late, sess = queue.Queue(), queue.Queue(), queue.Queue()
    with MqttClient(u[0], "pub", first=0) as pub, MqttClient(u[1], "sub", first=0) as sub:
        assert sub.subscribe("c/live/#", got.put).wait(5)
        assert wait_all([pub.publish("c/live/%d" % i, b"%d" % i, qos=1) for i in range(20)], 10) == 20
        assert sorted(m.payload for m in _drain(got)) == sorted(b"%d" % i for i in range(20))
        # retained on node 0, read on node 2
        assert pub.publish("c/ret", b"manifest", qos=1, retain=True).wait(5)
        with MqttClient(u[2], "late", first=0) as lc:
            assert lc.subscribe("c/ret", late.put).wait(5)
            m = late.get(timeout=5)
            assert (m.payload, m.retain) == (b"manifest", True)
        # a persistent session on node 1 gets what was published while it was away, on node 2
        s = MqttClient(u[1], "persistent", clean_session=False, first=0).connect()
        assert s.subscribe("c/q", sess.put).wait(5)
        s.stop()
        assert wait_all([pub.publish("c/q", b"q%d" % i, qos=1) for i in range(10)], 10) == 10
        s = MqttClient(u[2], "persistent", clean_session=False, first=0)
        s.subscribe("c/q", sess.put)
        s.connect()
        try:
            # QoS 1 is at least once: this cluster may hand some over twice (the hub dedups by id)
            assert {m.payload for m in _drain(sess, 2.0)} == {b"q%d" % i for i in range(10)}
        finally:
            s.stop()
        # over the 128 KiB payload limit: refused (the connection is dropped), as on mosquitto
        with MqttClient(u[0], "big", first=0) as bigc:
            big = bigc.publish("c/big", b"x" * (MAX_PAYLOAD + 1), qos=1)
            assert not big.wait(3)
        # no $share in aedes: a shared filter is just a (never matching) topic, so the hub must not rely on it
        shared = queue.Queue()
        assert sub.subscribe("$share/g/c/s", shared.put).wait(5) in (True, False)
        assert pub.publish("c/s", b"x", qos=1).wait(5)
        assert _drain(shared) == []


def test_assignment_is_balanced_and_the_same_for_everyone():
    parts = list(range(16)) + ["legacy"]
    a = assign(parts, ["b", "a", "c", "a"])
    assert sorted(a) == ["a", "b", "c"] and sorted(len(v) for v in a.values()) == [5, 6, 6]
    assert sorted(p for v in a.values() for p in v if p != "legacy") == list(range(16))
    assert assign(parts, ["c", "a", "b"]) == a  # order of arrival does not matter
    assert assign(parts, []) == {}
    with pytest.raises(ConfigError):
        PartitionLease(None, Topics(), "x", "i", parts, lambda p: [], None, heartbeat=5, lease=5)


class _Instance:
    """One in-process hub instance of service "svc" with its own connection and lease."""

    def __init__(self, urls, name, topics, seen, lease=1.5):
        self.client = MqttClient(urls, name, will=member_will(topics, "svc", name), reconnect=(1, 2))
        self.lease = PartitionLease(self.client, topics, "svc", name, list(range(topics.partitions)),
                                    lambda p: [topics.confirm_eval(p)], lambda m: seen.put((name, m.topic)),
                                    heartbeat=0.3, lease=lease, grace=0.5)
        self.lease.start()
        self.client.connect(15)

    def stop(self):
        self.lease.stop()
        self.client.stop()


@pytest.mark.slow
def test_leases_split_take_over_and_hand_back(deployment):
    t = Topics(prefix="lease/%s" % deployment.kind, partitions=8)
    seen = queue.Queue()
    a = _Instance(deployment.urls, "a", t, seen)
    b = c = None
    try:
        assert a.lease.wait_partitions(8, 10)  # alone: every partition
        b = _Instance(deployment.urls, "b", t, seen)
        assert a.lease.wait_partitions(4, 10) and b.lease.wait_partitions(4, 10)
        assert sorted(a.lease.owned() + b.lease.owned()) == list(range(8))
        assert a.lease.members() == b.lease.members() == ["a", "b"]
        with MqttClient(deployment.urls, "dev") as dev:
            _drain(seen, 0.2)
            wait_all([dev.publish(t.confirm_eval(p), b"r", qos=1) for p in range(8)], 10)
            got = _drain(seen, 1.0)
            # each request reaches exactly the instance that holds its partition
            assert sorted(topic for _n, topic in got) == sorted(t.confirm_eval(p) for p in range(8))
            assert {(n, int(topic.rsplit("/", 1)[1])) for n, topic in got} == \
                {("a", p) for p in a.lease.owned()} | {("b", p) for p in b.lease.owned()}
        # junk on the lease topic (wrong schema, wrong name, huge) joins nobody
        with MqttClient(deployment.urls, "junk") as j:
            wait_all([j.publish(t.hub_member("svc", "x"), b"not json", qos=1),
                      j.publish(t.hub_member("svc", "y"), json.dumps({"schema": 1, "instance": "z"}), qos=1),
                      j.publish(t.hub_member("svc", "w"), b"{" + b" " * 5000 + b"}", qos=1)], 5)
        a.lease._on_record(Message(t.hub_member("svc", "v"), json.dumps({"schema": 2, "instance": "v"}).encode(),
                                   1, False))
        assert a.lease.members() == ["a", "b"]
        # b leaves for good (its record cleared): a takes everything back
        b.stop()
        b = None
        assert a.lease.wait_partitions(8, 10)
        # c joins, then freezes with its connection open (no will is sent, its record stays
        # retained, its renewals stop): its lease runs out and a takes its partitions
        c = _Instance(deployment.urls, "c", t, seen)
        assert a.lease.wait_partitions(4, 10)
        c.lease._stop.set()
        assert a.lease.wait_partitions(8, 15)
        assert "c" not in a.lease.members()
        # and a cleared c's stale record, so that it greets no newcomer as a live member
        late = queue.Queue()
        with MqttClient(deployment.urls, "late") as lc:
            assert lc.subscribe(t.hub_members_filter("svc"), late.put).wait(5)
            names = {m.topic.rsplit("/", 1)[1] for m in _drain(late, 1.0, most=2.0) if m.payload}
        assert "c" not in names and "a" in names
    finally:
        for x in (a, b, c):
            if x is not None:
                x.lease._stop.set()
                x.client.stop()


def test_shared_split_subscribes_every_partition_shared():
    subs = []

    class FakeClient:
        def subscribe(self, f, cb, qos=1):
            subs.append(f)

            class Ack:
                def wait(self, timeout=None):
                    return True
            return Ack()

    t = Topics(partitions=4)
    s = split_topics(FakeClient(), t, "confirm", list(range(4)), lambda p: [t.confirm_eval(p)], None,
                     instance="i", group="hub").start()
    assert subs == ["$share/hub/gatewatch/v1/confirm/eval/%d" % p for p in range(4)] and s.wait(1)
    assert s.owned() == [0, 1, 2, 3]
