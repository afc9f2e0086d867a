"""MQTT plumbing: one small client API over paho-mqtt 1.6.1 *and* 2.x, plus the topic names.

Owns: the paho compatibility layer (callback API versions, reason codes, connect flags), the
connect/loop thread with reconnect backoff, waitable publish/subscribe acknowledgements, URL parsing
(mqtt://, mqtts://) and the topic layout (`Topics`). Must not touch: what is published (lists,
reports, confirmations belong to their own modules) and never logs payloads (they may be reports).

Why a layer at all: OpenWrt ships paho 1.6.1, desktops get 2.x, and the two differ in the
constructor (`CallbackAPIVersion`), in every callback signature and in how reason codes look. Every
other module talks to `MqttClient` and never imports paho itself.
"""
from __future__ import annotations

import logging
import os
import random
import socket
import ssl
import threading
import time
from collections import namedtuple
from urllib.parse import unquote, urlsplit

import paho.mqtt
import paho.mqtt.client as _paho

from agent.core.errors import ConfigError, GatewatchError

log = logging.getLogger(__name__)

PAHO_VERSION = getattr(paho.mqtt, "__version__", "0")
#: True on paho-mqtt 2.x (callback API version 2); False on 1.6.x.
PAHO2 = hasattr(_paho, "CallbackAPIVersion")

DEFAULT_PREFIX = "gatewatch/v1"
#: The smallest common broker payload limit; list chunks must fit in it.
MAX_PAYLOAD = 128 * 1024

PROTOCOLS = {"3.1.1": _paho.MQTTv311, "5": _paho.MQTTv5, "3.1": _paho.MQTTv31}

#: How many partitions the confirmation request and report topics have (docs/cluster.md). Hub
#: instances split them between them (tools/partitions.py); a device picks one per message from a
#: random value, never from its identity. Part of the topic layout under the versioned prefix:
#: devices and hub must agree, so it changes only with the prefix's version.
PARTITIONS = 16

Message = namedtuple("Message", "topic payload qos retain")
Message.__doc__ = "An received MQTT message (immutable): topic str, payload bytes, qos int, retain bool."


class MqttError(GatewatchError, ConnectionError):
    """The broker could not be reached, refused us, or an operation timed out."""


class TopicError(GatewatchError, ValueError):
    """A topic segment is empty or contains '/', '+', '#' or NUL."""


def _rc_value(rc):
    """Normalise a paho return/reason code (int on 1.6, ReasonCode object on 2.x) to an int."""
    if rc is None:
        return 0
    value = getattr(rc, "value", rc)
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _rc_failed(rc):
    """True if a CONNACK/SUBACK/PUBACK reason code means failure (>= 0x80, or a v3 connack refusal)."""
    if rc is None:
        return False
    if hasattr(rc, "is_failure"):
        return bool(rc.is_failure)
    return _rc_value(rc) != 0


def parse_url(url):
    """Split ``mqtt[s]://[user[:password]@]host[:port]`` into a dict; raise ConfigError if invalid."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError("broker URL %r is invalid (%s); use mqtt://host:1883 or mqtts://host:8883"
                          % (url, exc)) from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError("broker URL %r: scheme must be mqtt:// or mqtts://" % (url,))
    if not parts.hostname:
        raise ConfigError("broker URL %r has no host; use mqtt://host:1883" % (url,))
    tls = parts.scheme == "mqtts"
    return {
        "host": parts.hostname,
        "port": port or (8883 if tls else 1883),
        "tls": tls,
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
    }


def broker_urls(url):
    """(urls, parsed) of one URL, or of several: a list, or one string separated by commas or
    spaces (the nodes of one clustered broker, tried in turn). Every URL must use the same scheme:
    one TLS setting serves them all. Raises ConfigError."""
    if isinstance(url, str):
        urls = [u for u in url.replace(",", " ").split() if u]
    else:
        urls = [u for u in (url or ()) if u]
    if not urls:
        raise ConfigError("no broker URL given; use mqtt://host:1883 or mqtts://host:8883")
    confs = [parse_url(u) for u in urls]
    if len({c["tls"] for c in confs}) > 1:
        raise ConfigError("broker URLs %s mix mqtt:// and mqtts://; use one scheme for every node"
                          % ", ".join(urls))
    return urls, confs


def pick_partition(value=None, partitions=PARTITIONS):
    """The partition of one message: from ``value`` (a random id: hex text or bytes, e.g. a report
    id, so that a resend goes where the first copy went) or from fresh random bytes. Never pass
    anything derived from the device (client id, login, address): the hub would see it in the topic."""
    if value is None:
        raw = os.urandom(4)
    elif isinstance(value, bytes):
        raw = value[:4]
    else:
        try:
            raw = bytes.fromhex(str(value)[:8])
        except ValueError:
            raw = os.urandom(4)
    return int.from_bytes(raw.ljust(4, b"\0"), "big") % int(partitions)


def _check_partition(partition, partitions):
    if isinstance(partition, bool) or not isinstance(partition, int) or not 0 <= partition < partitions:
        raise TopicError("partition %r must be a whole number from 0 to %d" % (partition, partitions - 1))
    return "%d" % partition


def _check_segment(name, value):
    value = str(value)
    if not value or any(c in value for c in "/+#\0"):
        raise TopicError("topic segment %s=%r must be non-empty and free of '/', '+', '#'"
                         % (name, value))
    return value


class Topics:
    """Topic names under one versioned prefix (default ``gatewatch/v1``); see DESIGN.md, MQTT.

    Names are built here only, so that the broker ACL (firmware/mosquitto/) and the code agree.
    Every segment is validated: a source called ``a/b`` or ``#`` would widen a subscription.
    """

    def __init__(self, prefix=DEFAULT_PREFIX, partitions=PARTITIONS):
        prefix = prefix.strip("/")
        if not prefix or "+" in prefix or "#" in prefix:
            raise TopicError("topic prefix %r must be non-empty and free of wildcards" % (prefix,))
        self.prefix = prefix
        self.partitions = int(partitions)

    def pick_partition(self, value=None):
        """A partition for one message (``pick_partition``): from a random ``value`` or fresh random bytes."""
        return pick_partition(value, self.partitions)

    def _t(self, *segments):
        return "/".join((self.prefix,) + segments)

    # lists
    def lists_filter(self):
        """Everything about lists (devices subscribe to this)."""
        return self._t("lists", "#")

    def manifest(self, source, list_name):
        """Retained signed manifest of the newest version of one list."""
        return self._t("lists", _check_segment("source", source), _check_segment("list", list_name),
                       "manifest")

    def snapshot_chunk(self, source, list_name, version, index):
        """Chunk ``index`` of the full snapshot of ``version``."""
        return self._t("lists", _check_segment("source", source), _check_segment("list", list_name),
                       "v%d" % int(version), "snapshot", "%d" % int(index))

    def delta_chunk(self, source, list_name, from_version, to_version, index):
        """Chunk ``index`` of the delta ``from_version`` -> ``to_version``."""
        return self._t("lists", _check_segment("source", source), _check_segment("list", list_name),
                       "delta", "%d-%d" % (int(from_version), int(to_version)), "%d" % int(index))

    def timestamp(self, source):
        """Retained signed timestamp of one source: the current version of each of its lists."""
        return self._t("lists", _check_segment("source", source), "timestamp")

    # the transparency log (docs/transparency.md)
    def log_proof(self, source, list_name, version):
        """Retained inclusion proof of list ``version`` under the log's newest head (next to its chunks)."""
        return self._t("lists", _check_segment("source", source), _check_segment("list", list_name),
                       "v%d" % int(version), "proof")

    def log_head(self, log):
        """Retained newest step of a log: its newest signed tree head and the proof from the one before."""
        return self._t("log", _check_segment("log", log), "head")

    def log_head_filter(self):
        """The newest head of every log (devices subscribe to this)."""
        return self._t("log", "+", "head")

    def log_step(self, log, from_size):
        """Retained step of a log from its head of ``from_size`` leaves to the next head (never changes)."""
        return self._t("log", _check_segment("log", log), "step", "%d" % int(from_size))

    # confirmation
    def _partitioned(self, kind, partition):
        if partition is None:
            return self._t("confirm", kind)
        return self._t("confirm", kind, _check_partition(partition, self.partitions))

    def confirm_eval(self, partition=None):
        """Where devices publish blinded evaluation requests: ``confirm/eval/<partition>`` (a random
        partition per request, ``pick_partition()``), or ``confirm/eval``. No identity in topic or payload."""
        return self._partitioned("eval", partition)

    def confirm_fetch(self, partition=None):
        """Where devices ask for sealed buckets (with the ticket of an evaluation), partitioned likewise."""
        return self._partitioned("fetch", partition)

    def confirm_request_filters(self):
        """Every evaluation and fetch request, partitioned or not (one hub instance that takes them all)."""
        return [self._t("confirm", "eval", "#"), self._t("confirm", "fetch", "#")]

    def confirm_requests_shared(self, group="hub"):
        """Shared subscriptions by which several hub instances split requests (evaluations, fetches and
        token requests)."""
        g = _check_segment("group", group)
        return ["$share/%s/%s" % (g, f) for f in self.confirm_request_filters() + [self.tokens_req_filter()]]

    def confirm_resp(self, reply_id):
        """The answer to one request: a fresh random id the device chose, never its identity."""
        return self._t("confirm", "resp", _check_segment("reply_id", reply_id))

    def tokens_req(self, login, partition=None):
        """Where a device asks for its epoch's batch of anonymous tokens (the ACL ties it to the login):
        ``tokens/req/<login>/<partition>``, the partition fixed by the login (``pick_partition(login)``) so
        that one hub instance counts a device's batches, or ``tokens/req/<login>``."""
        if partition is None:
            return self._t("tokens", "req", _check_segment("login", login))
        return self._t("tokens", "req", _check_segment("login", login), _check_partition(partition, self.partitions))

    def tokens_req_filter(self, partition=None):
        """Token requests: all of them, those of one partition, or (``"legacy"``) the unpartitioned ones."""
        if partition is None:
            return self._t("tokens", "req", "#")
        if partition == "legacy":
            return self._t("tokens", "req", "+")
        return self._t("tokens", "req", "+", _check_partition(partition, self.partitions))

    def tokens_resp(self, login, reply_id):
        """The answer to one token request."""
        return self._t("tokens", "resp", _check_segment("login", login), _check_segment("reply_id", reply_id))

    def tokens_resp_filter(self, login):
        """What a device subscribes to for its token answers (the ACL allows no other)."""
        return self._t("tokens", "resp", _check_segment("login", login), "+")

    def hub_alarm(self):
        """Retained: the confirmation service's flood alarm (counts only)."""
        return self._t("hub", "alarm")

    # reports
    def reports(self, source, ack_token=None, partition=None):
        """Where devices publish reports for one source. No device identity in the topic.

        With ``ack_token`` (random, rotating; see docs/reports.md) the hub acknowledges the stored
        report on ``ack(ack_token)``; without it (older agents) nobody acknowledges but the broker.
        ``partition`` (with a token; ``pick_partition(report id)``) picks the hub instance that
        takes it: ``reports/<source>/<token>/<partition>``.
        """
        if ack_token is None:
            return self._t("reports", _check_segment("source", source))
        if partition is None:
            return self._t("reports", _check_segment("source", source), _check_segment("ack_token", ack_token))
        return self._t("reports", _check_segment("source", source), _check_segment("ack_token", ack_token),
                       _check_partition(partition, self.partitions))

    def reports_unpartitioned_filters(self):
        """Reports of agents from before partitions: ``reports/<source>`` and ``reports/<source>/<token>``."""
        return [self._t("reports", "+"), self._t("reports", "+", "+")]

    def reports_partition_filter(self, partition):
        """The reports of one partition, of every source and token."""
        return self._t("reports", "+", "+", _check_partition(partition, self.partitions))

    def reports_filter(self):
        """All reports of all sources, with an ack token level (``reports/<source>/<token>``) or
        without (``reports/<source>``, older agents)."""
        return self._t("reports", "#")

    def reports_shared(self, group="hub"):
        """Shared subscription by which several collectors split the reports."""
        return "$share/%s/%s" % (_check_segment("group", group), self.reports_filter())

    def source_of_report_topic(self, topic):
        """The source segment of a report topic, or None if ``topic`` is not one."""
        parsed = self.parse_report_topic(topic)
        return parsed[0] if parsed else None

    def parse_report_topic(self, topic):
        """(source, ack token or None) of a report topic, or None if ``topic`` is not one."""
        head = self._t("reports") + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head):].split("/")
        if len(parts) > 3 or not all(parts):
            return None
        if len(parts) == 3 and not self._is_partition(parts[2]):
            return None
        return parts[0], (parts[1] if len(parts) >= 2 else None)

    def _is_partition(self, text):
        # ASCII digits only ("\u0663" passes str.isdigit), no leading zeros, in range
        return (0 < len(text) <= 6 and all("0" <= c <= "9" for c in text) and (text == "0" or text[0] != "0")
                and int(text) < self.partitions)

    # hub instances (tools/partitions.py): who is alive, so that each takes a share of the partitions
    def hub_member(self, service, instance):
        """Retained lease record of one hub instance of ``service`` (e.g. ``collect``, ``confirm``)."""
        return self._t("hub", _check_segment("service", service), "members", _check_segment("instance", instance))

    def hub_members_filter(self, service):
        """Every instance of ``service``."""
        return self._t("hub", _check_segment("service", service), "members", "+")

    def ack(self, ack_token):
        """Where the hub acknowledges stored reports to the device holding ``ack_token``.

        Outside ``reports/``: devices may write ``reports/+/+`` and must never be able to forge an
        acknowledgement (the ACL gives them read access here, and write access to no one but the hub).
        """
        return self._t("ack", _check_segment("ack_token", ack_token))

    # status
    def status(self, client_id):
        """Retained device status (list versions, last refusal; nothing about subscribers)."""
        return self._t("status", _check_segment("client_id", client_id))

    def status_filter(self):
        """All device statuses (hub side)."""
        return self._t("status", "+")


def _filter_of(topic_filter):
    """The plain filter behind a ``$share/<group>/<filter>`` subscription (for local matching)."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        return parts[2] if len(parts) == 3 else topic_filter
    return topic_filter


class PublishAck:
    """Waitable acknowledgement of one publish: PUBACK for QoS 1, written to the socket for QoS 0.

    paho's own MQTTMessageInfo.wait_for_publish() raises when the publish happened while the
    connection was down, although paho keeps QoS>0 messages and resends them on reconnect; this
    object waits for the real acknowledgement instead.
    """

    __slots__ = ("mid", "rc", "_event", "failed", "reason")

    def __init__(self, mid, rc):
        self.mid = mid
        self.rc = rc
        self.failed = False
        self.reason = 0  # the PUBACK reason code where paho reports it (2.x, MQTT 5), e.g. 0x10
        self._event = threading.Event()

    def _set(self, failed=False, reason=0):
        self.failed = failed
        self.reason = reason
        self._event.set()

    @property
    def done(self):
        """True once the broker acknowledged (or refused, see ``failed``)."""
        return self._event.is_set()

    def wait(self, timeout=None):
        """Block until acknowledged; return True if acknowledged in time and not refused."""
        return self._event.wait(timeout) and not self.failed


class SubscribeAck:
    """Waitable SUBACK; ``granted`` lists the granted QoS per filter (>= 0x80 means refused)."""

    def __init__(self):
        self.granted = None
        self._event = threading.Event()

    def _set(self, granted):
        self.granted = granted
        self._event.set()

    def wait(self, timeout=None):
        """Block until the SUBACK; True if every filter was granted."""
        if not self._event.wait(timeout):
            return False
        return all(g < 0x80 for g in self.granted)


class MqttClient:
    """A paho client with a loop thread, reconnect backoff and waitable acknowledgements.

    ``callback(message)`` of a subscription runs on the network thread; for QoS 1 paho sends the
    PUBACK only after the callback returns, so a callback that stores durably before returning
    gives at-least-once delivery into that store.
    """

    def __init__(self, url, client_id, username=None, password=None, tls=None, *,
                 clean_session=True, keepalive=30, protocol="3.1.1", reconnect=(0.5, 30.0),
                 max_inflight=20, max_queued=0, will=None, on_connect=None, on_disconnect=None,
                 first=None):
        # ``url``: one URL, or several (a list, or one string separated by commas or spaces): the
        # nodes of one clustered broker. ``first``: index to start at; None starts at a random one.
        self.urls, confs = broker_urls(url)
        conf = confs[0]
        if protocol not in PROTOCOLS:
            raise ConfigError("MQTT protocol %r unknown; use one of %s" % (protocol, sorted(PROTOCOLS)))
        if not client_id:
            raise ConfigError("an MQTT client id is required")
        self._confs = confs
        self._index = (random.randrange(len(confs)) if first is None else int(first)) % len(confs)
        conf = confs[self._index]
        self.url = self.urls[self._index]
        self.host, self.port = conf["host"], conf["port"]
        self.failovers = 0
        self.client_id = client_id
        self.username = username if username is not None else conf["username"]
        self.password = password if password is not None else conf["password"]
        self._protocol = PROTOCOLS[protocol]
        self._keepalive = keepalive
        self._user_on_connect = on_connect
        self._user_on_disconnect = on_disconnect
        self._lock = threading.Lock()
        self._acks = {}          # mid -> PublishAck, waiting for on_publish
        self._early = {}         # mid -> failed flag, on_publish ran before publish() registered
        self._sub_acks = {}      # mid -> SubscribeAck
        self._early_sub = {}     # mid -> granted codes, SUBACK before subscribe() registered
        self._subs = {}          # topic filter -> (qos, callback)
        self._pending_subs = {}  # topic filter -> SubscribeAck of a subscribe made while offline
        self._connected = threading.Event()
        self._started = False
        self.last_connect_error = None
        self.connects = 0

        kwargs = {"client_id": client_id, "protocol": self._protocol}
        if self._protocol != _paho.MQTTv5:
            kwargs["clean_session"] = clean_session
        if PAHO2:
            kwargs["callback_api_version"] = _paho.CallbackAPIVersion.VERSION2
        self._clean_start = clean_session
        self._client = _paho.Client(**kwargs)
        if self.username is not None:
            self._client.username_pw_set(self.username, self.password)
        if conf["tls"] or tls:
            self._setup_tls(tls or {})
        if will is not None:
            topic, payload, qos, retain = will
            self._client.will_set(topic, payload, qos, retain)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(max_queued)
        self._client.reconnect_delay_set(min_delay=max(1, int(reconnect[0])), max_delay=int(reconnect[1]))
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def _setup_tls(self, tls):
        """``tls``: dict with optional ca_certs, certfile, keyfile, insecure (skip host check)."""
        allowed = {"ca_certs", "certfile", "keyfile", "insecure"}
        unknown = set(tls) - allowed
        if unknown:
            raise ConfigError("unknown TLS settings %s; allowed: %s" % (sorted(unknown), sorted(allowed)))
        self._client.tls_set(ca_certs=tls.get("ca_certs"), certfile=tls.get("certfile"),
                             keyfile=tls.get("keyfile"), cert_reqs=ssl.CERT_REQUIRED)
        if tls.get("insecure"):
            self._client.tls_insecure_set(True)

    # life cycle -----------------------------------------------------------------------------
    def start(self):
        """Start the loop thread and connect in the background (retrying with backoff)."""
        if self._started:
            return self
        self._started = True
        kwargs = {}
        if self._protocol == _paho.MQTTv5:
            kwargs["clean_start"] = self._clean_start
        self._client.connect_async(self.host, self.port, self._keepalive, **kwargs)
        self._client.loop_start()
        return self

    def connect(self, timeout=10.0):
        """Start and wait until connected; raise MqttError saying why if that does not happen."""
        self.start()
        deadline = time.monotonic() + timeout
        # a refusal (bad login, ACL) is final for this call: say so now rather than at the timeout
        while not self._connected.wait(0.05) and time.monotonic() < deadline:
            if self.last_connect_error and self.last_connect_error.startswith("refused"):
                break
        if not self._connected.is_set():
            why = self.last_connect_error or "no answer"
            where = "%s:%d" % (self.host, self.port) if len(self.urls) < 2 else \
                "any of %s" % ", ".join("%s:%d" % (c["host"], c["port"]) for c in self._confs)
            raise MqttError("could not connect to %s within %.1fs (%s); is the broker running and "
                            "are the credentials right?" % (where, timeout, why))
        return self

    def stop(self):
        """Disconnect cleanly and stop the loop thread."""
        if not self._started:
            return
        self._started = False
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self._connected.clear()

    def abort(self):
        """Drop the TCP connection without DISCONNECT or PUBACK; paho reconnects with backoff.

        A QoS 1 message whose handler failed is then not acknowledged, so a broker holding a
        persistent session delivers it again instead of losing it.
        """
        sock = self._client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.stop()

    @property
    def connected(self):
        """True while a session with the broker is up."""
        return self._connected.is_set()

    def wait_connected(self, timeout=None):
        """Block until connected; True if so within ``timeout``."""
        return self._connected.wait(timeout)

    # operations -----------------------------------------------------------------------------
    def publish(self, topic, payload, qos=0, retain=False):
        """Publish; returns a PublishAck. QoS>0 publishes made while offline are sent on reconnect."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        rc = _rc_value(info.rc)
        ack = PublishAck(info.mid, rc)
        if rc == _paho.MQTT_ERR_QUEUE_SIZE:
            ack._set(failed=True)
            return ack
        with self._lock:
            if info.mid in self._early:
                ack._set(*self._early.pop(info.mid))
            else:
                self._acks[info.mid] = ack
        return ack

    def subscribe(self, topic_filter, callback, qos=1):
        """Subscribe (again after every reconnect); ``callback(Message)``. Returns a SubscribeAck."""
        with self._lock:
            self._subs[topic_filter] = (qos, callback)
        return self._send_subscribe(topic_filter, qos)

    def unsubscribe(self, topic_filter):
        """Forget a subscription."""
        with self._lock:
            self._subs.pop(topic_filter, None)
        self._client.unsubscribe(topic_filter)

    def _send_subscribe(self, topic_filter, qos, ack=None):
        ack = ack or SubscribeAck()
        rc, mid = self._client.subscribe(topic_filter, qos)
        if _rc_value(rc) != 0 or mid is None:
            # not connected: on_connect subscribes again and completes this ack then
            with self._lock:
                self._pending_subs[topic_filter] = ack
            return ack
        with self._lock:
            if mid in self._early_sub:
                ack._set(self._early_sub.pop(mid))
            else:
                self._sub_acks[mid] = ack
        return ack

    # paho callbacks (signatures differ between 1.6 and 2.x: take *args) --------------------
    def _on_connect(self, client, userdata, flags, rc, *rest):
        if _rc_failed(rc):
            self.last_connect_error = "refused: %s" % (rc if PAHO2 else _paho.connack_string(rc),)
            log.warning("broker %s:%d refused the connection: %s", self.host, self.port,
                        self.last_connect_error)
            return
        self.last_connect_error = None
        self.connects += 1
        _no_delay(client)
        with self._lock:
            subs = list(self._subs.items())
        for topic_filter, (qos, _cb) in subs:
            with self._lock:
                pending = self._pending_subs.pop(topic_filter, None)
            self._send_subscribe(topic_filter, qos, pending)
        self._connected.set()
        log.info("connected to %s:%d as %s", self.host, self.port, self.client_id)
        if self._user_on_connect:
            self._user_on_connect(self)

    def _on_disconnect(self, client, userdata, *args):
        # 1.6: (rc) or (rc, properties); 2.x: (flags, reason_code, properties)
        rc = args[1] if PAHO2 else args[0]
        was = self._connected.is_set()
        self._connected.clear()
        if was:
            log.info("disconnected from %s:%d (%s)", self.host, self.port, rc)
        if self._started:
            self._next_broker()
        if self._user_on_disconnect:
            self._user_on_disconnect(self)

    def _on_connect_fail(self, client, userdata, *rest):
        self.last_connect_error = "unreachable"
        self._next_broker()

    def _next_broker(self):
        """Point paho's next reconnect at the next URL (several URLs: the nodes of one cluster).

        paho reconnects to ``_host``/``_port`` (1.6.1 and 2.x alike) and offers no public way to
        change them while its loop runs (2.x's ``host`` setter refuses unless fully closed);
        both versions read them afresh at every reconnect, so setting them here is enough.
        """
        if len(self._confs) < 2:
            return
        self._index = (self._index + 1) % len(self._confs)
        conf = self._confs[self._index]
        self.url = self.urls[self._index]
        self.host, self.port = conf["host"], conf["port"]
        self._client._host, self._client._port = conf["host"], conf["port"]
        self.failovers += 1
        log.info("next connection attempt: %s:%d (broker %d of %d)", self.host, self.port,
                 self._index + 1, len(self._confs))

    def _on_publish(self, client, userdata, mid, *rest):
        failed = bool(rest) and PAHO2 and _rc_failed(rest[0])
        reason = _rc_value(rest[0]) if rest and PAHO2 else 0
        with self._lock:
            ack = self._acks.pop(mid, None)
            if ack is None:
                self._early[mid] = (failed, reason)
        if ack is not None:
            ack._set(failed, reason)

    def _on_subscribe(self, client, userdata, mid, granted, *rest):
        codes = [_rc_value(g) for g in granted]
        with self._lock:
            ack = self._sub_acks.pop(mid, None)
            if ack is None:
                self._early_sub[mid] = codes
        if ack is not None:
            ack._set(codes)

    def _on_message(self, client, userdata, msg):
        message = Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain))
        with self._lock:
            subs = list(self._subs.items())
        for topic_filter, (_qos, callback) in subs:
            if _paho.topic_matches_sub(_filter_of(topic_filter), message.topic):
                try:
                    callback(message)
                except Exception:  # a bad handler must not kill the network thread
                    log.exception("handler for %s failed; dropping the connection so that the "
                                  "broker delivers the message again", topic_filter)
                    self.abort()


def _no_delay(paho_client):
    """Disable Nagle on the broker socket: paho writes PUBACK and the next PUBLISH separately, and
    Nagle holds the second until the broker's delayed ACK (~40 ms per request/answer round trip)."""
    import socket

    try:
        paho_client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):  # a websocket or TLS wrapper without the option: keep going
        pass


def wait_all(acks, timeout):
    """Wait for every PublishAck until a shared deadline; return how many were acknowledged."""
    deadline = time.monotonic() + timeout
    n = 0
    for ack in acks:
        if ack.wait(max(0.0, deadline - time.monotonic())):
            n += 1
    return n
