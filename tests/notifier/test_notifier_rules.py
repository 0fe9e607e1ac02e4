"""The notifier's rules as pure functions: when a waiting thread is due, what is skipped and why,
the digest, the claim's attempts, and what the webhook and the email say."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from im_contracts.notifications import NotificationWebhook, sign
from im_notifier.domain import (
    EPOCH,
    NEVER,
    THREADS_MAX,
    AgentDoc,
    Policy,
    Prefs,
    Thread,
    attempt_deferred,
    attempt_finished,
    attempt_started,
    decide,
    ready_claims,
    update_for_presence,
    updates_for_message,
    with_defaults,
)
from im_notifier.render import digest_email, webhook_body
from im_runtime.webhook_urls import address_allowed, check_url, networks

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
S = timedelta(seconds=1)
POLICY = Policy(delay=60 * S, assistance_delay=0 * S, digest_window=600 * S, webhook=True, email=True,
                max_tries=3, retry_initial=5 * S, retry_max=60 * S)


def waiting(cid: str, last: int, at: datetime, *, read: int = 0, assist: int = 0, sender: str = "bob") -> Thread:
    return Thread(conversation_id=cid, last_seq=last, read_seq=read, assist_seq=assist, hook_since=at,
                  mail_since=at, last_at=at, last_sender=sender, preview="the printer is on fire")


def agent(*threads: Thread, status: str = "away", absent_since: datetime = EPOCH, email: str | None = "a@x.test",
          **kw) -> AgentDoc:
    # A presence event came when the agent left (none at all: never seen, away since the epoch).
    seen = absent_since if absent_since not in (EPOCH, NEVER) else EPOCH
    return AgentDoc(tenant_id="t1", agent_id="alice", status=status, status_at=seen, absent_since=absent_since,
                    email=email, threads={t.conversation_id: t for t in threads}, **kw)


def test_a_waiting_thread_is_due_delay_after_it_started_waiting_and_then_claimed_once():
    doc = agent(waiting("c1", 3, T0))
    early = decide(doc, T0 + 59 * S, POLICY, Prefs())
    assert early.claimed == {} and doc.due_at == T0 + 60 * S
    on_time = decide(doc, T0 + 60 * S, POLICY, Prefs())
    assert set(on_time.claimed) == {"webhook", "email"}
    hook = on_time.claimed["webhook"]
    assert [(i["conversation_id"], i["first_unread_seq"], i["last_seq"], i["unread"]) for i in hook["threads"]] == [
        ("c1", 1, 3, 3)]
    assert doc.threads["c1"].hook_seq == 3 and doc.threads["c1"].mail_seq == 3
    assert decide(doc, T0 + 61 * S, POLICY, Prefs()).claimed == {}  # nothing waits any more


def test_the_delay_runs_from_when_the_agent_left_not_from_the_message():
    doc = agent(waiting("c1", 1, T0), absent_since=T0 + 30 * S)
    assert decide(doc, T0 + 60 * S, POLICY, Prefs()).claimed == {}
    assert doc.due_at == T0 + 90 * S
    assert set(decide(doc, T0 + 90 * S, POLICY, Prefs()).claimed) == {"webhook", "email"}


def test_reading_within_the_delay_means_nothing_is_sent_and_it_counts_as_read():
    thread = waiting("c1", 4, T0, read=4)
    doc = agent(thread)
    decision = decide(doc, T0 + 60 * S, POLICY, Prefs())
    assert decision.claimed == {}
    assert ("webhook", "read", 1) in decision.skipped and ("email", "read", 1) in decision.skipped
    assert doc.due_at == NEVER


def test_online_when_due_counts_as_seen_and_a_later_message_waits_again():
    doc = agent(waiting("c1", 2, T0), status="online", absent_since=NEVER)
    decision = decide(doc, T0 + 60 * S, POLICY, Prefs())
    assert decision.claimed == {} and ("webhook", "online", 1) in decision.skipped
    assert doc.threads["c1"].hook_seq == 2
    doc.status, doc.absent_since = "away", T0 + 100 * S  # left; a new message comes
    doc.threads["c1"].last_seq, doc.threads["c1"].hook_since = 3, T0 + 120 * S
    assert decide(doc, T0 + 179 * S, POLICY, Prefs()).claimed == {}
    claimed = decide(doc, T0 + 180 * S, POLICY, Prefs()).claimed["webhook"]
    assert [(i["first_unread_seq"], i["last_seq"]) for i in claimed["threads"]] == [(3, 3)]


def test_do_not_disturb_and_muted_threads_send_nothing():
    doc = agent(waiting("c1", 1, T0), waiting("c2", 1, T0))
    decision = decide(doc, T0 + 60 * S, POLICY, Prefs(muted=frozenset({"c1"})))
    assert [i["conversation_id"] for i in decision.claimed["webhook"]["threads"]] == ["c2"]
    assert ("webhook", "muted", 1) in decision.skipped
    quiet = agent(waiting("c3", 1, T0))
    decision = decide(quiet, T0 + 60 * S, POLICY, Prefs(do_not_disturb=True))
    assert decision.claimed == {} and ("webhook", "do_not_disturb", 1) in decision.skipped


def test_assistance_requests_use_their_own_delay():
    doc = agent(waiting("c1", 1, T0, assist=1), waiting("c2", 1, T0))
    decision = decide(doc, T0, POLICY, Prefs())
    items = decision.claimed["webhook"]["threads"]
    # Due at once; the digest carries the other waiting thread along.
    assert {i["conversation_id"]: i["assistance"] for i in items} == {"c1": True, "c2": False}


def test_one_notification_per_channel_carries_every_waiting_thread():
    doc = agent(waiting("c1", 6, T0), waiting("c2", 4, T0 + 5 * S))
    claimed = decide(doc, T0 + 60 * S, POLICY, Prefs()).claimed
    assert sorted(i["conversation_id"] for i in claimed["webhook"]["threads"]) == ["c1", "c2"]
    assert sum(i["unread"] for i in claimed["email"]["threads"]) == 10


def test_email_waits_for_the_digest_window_and_the_webhook_does_not():
    doc = agent(waiting("c1", 1, T0))
    decide(doc, T0 + 60 * S, POLICY, Prefs())
    for channel in ("webhook", "email"):
        key = doc.outgoing[channel]["key"]
        assert attempt_started(doc, channel, key, T0 + 60 * S, 15 * S, POLICY)
        assert attempt_finished(doc, channel, key, T0 + 61 * S, POLICY, None) == "sent"
    doc.threads["c1"].last_seq, doc.threads["c1"].hook_since, doc.threads["c1"].mail_since = 2, T0 + 100 * S, T0 + 100 * S
    later = decide(doc, T0 + 160 * S, POLICY, Prefs())
    assert set(later.claimed) == {"webhook"}
    key = later.claimed["webhook"]["key"]
    attempt_started(doc, "webhook", key, T0 + 160 * S, 15 * S, POLICY)
    assert attempt_finished(doc, "webhook", key, T0 + 161 * S, POLICY, None) == "sent"
    assert doc.due_at == T0 + 660 * S  # the email window, from the last email
    assert set(decide(doc, T0 + 660 * S, POLICY, Prefs()).claimed) == {"email"}


def test_a_channel_the_tenant_has_not_set_up_or_an_agent_without_email_is_skipped():
    doc = agent(waiting("c1", 1, T0), email=None)
    decision = decide(doc, T0 + 60 * S, Policy(delay=60 * S, assistance_delay=60 * S, digest_window=600 * S,
                                                webhook=False, email=True), Prefs())
    assert decision.claimed == {}
    assert ("webhook", "channel_off", 1) in decision.skipped and ("email", "no_address", 1) in decision.skipped


def test_attempts_retry_with_backoff_then_give_up():
    doc = agent(waiting("c1", 1, T0), email=None)
    key = decide(doc, T0 + 60 * S, POLICY, Prefs()).claimed["webhook"]["key"]
    now = T0 + 60 * S
    assert attempt_started(doc, "webhook", key, now, 15 * S, POLICY)
    assert not attempt_started(doc, "webhook", key, now, 15 * S, POLICY)  # leased
    assert attempt_finished(doc, "webhook", key, now + S, POLICY, "HTTP 500") == "retry"
    assert doc.outgoing["webhook"]["next_try_at"] == now + 6 * S and doc.due_at == now + 6 * S
    assert not attempt_started(doc, "webhook", key, now + 5 * S, 15 * S, POLICY)  # backing off
    assert attempt_started(doc, "webhook", key, now + 6 * S, 15 * S, POLICY)
    assert attempt_finished(doc, "webhook", key, now + 7 * S, POLICY, "HTTP 500") == "retry"
    assert doc.outgoing["webhook"]["next_try_at"] == now + 17 * S  # 10 s: doubled
    assert attempt_started(doc, "webhook", key, now + 17 * S, 15 * S, POLICY)
    assert attempt_finished(doc, "webhook", key, now + 18 * S, POLICY, "timeout") == "dead"
    assert "webhook" not in doc.outgoing and doc.due_at == NEVER
    assert attempt_finished(doc, "webhook", key, now + 19 * S, POLICY, None) == "gone"


def test_a_claim_whose_process_died_is_ready_again_when_its_lease_ends():
    doc = agent(waiting("c1", 1, T0), email=None)
    key = decide(doc, T0 + 60 * S, POLICY, Prefs()).claimed["webhook"]["key"]
    assert attempt_started(doc, "webhook", key, T0 + 60 * S, 15 * S, POLICY)
    assert ready_claims(doc, T0 + 74 * S) == [] and doc.due_at == T0 + 75 * S
    assert [c["key"] for c in ready_claims(doc, T0 + 75 * S)] == [key]
    assert attempt_started(doc, "webhook", key, T0 + 75 * S, 15 * S, POLICY)
    assert doc.outgoing["webhook"]["attempts"] == 2 and doc.outgoing["webhook"]["key"] == key


def test_while_one_is_in_flight_new_messages_wait_for_the_next():
    doc = agent(waiting("c1", 1, T0), email=None)
    first = decide(doc, T0 + 60 * S, POLICY, Prefs()).claimed["webhook"]
    doc.threads["c1"].last_seq, doc.threads["c1"].hook_since = 2, T0 + 61 * S
    assert decide(doc, T0 + 200 * S, POLICY, Prefs()).claimed == {}
    attempt_started(doc, "webhook", first["key"], T0 + 200 * S, 15 * S, POLICY)
    attempt_finished(doc, "webhook", first["key"], T0 + 201 * S, POLICY, None)
    second = decide(doc, T0 + 201 * S, POLICY, Prefs()).claimed["webhook"]
    assert second["key"] != first["key"] and [i["first_unread_seq"] for i in second["threads"]] == [2]


def test_threads_are_bounded_quiet_ones_first():
    quiet = [Thread(conversation_id=f"q{i}", last_seq=1, read_seq=1, last_at=T0 + i * S) for i in range(THREADS_MAX)]
    doc = agent(*quiet, waiting("w1", 1, T0 + 500 * S))
    decide(doc, T0 + 501 * S, POLICY, Prefs())
    assert len(doc.threads) == THREADS_MAX and "w1" in doc.threads and "q0" not in doc.threads


def test_the_consumers_updates_raise_only_and_own_messages_mark_read():
    ops = updates_for_message(conversation_id="c1", seq=7, sender_id="bob", recipients=["alice", "bob"], at=T0,
                              preview=None, assistance=True, due_after=0 * S)
    by_agent = [(a, u) for a, _, u, _ in ops if "$max" in u]
    assert by_agent[0][0] == "alice" and by_agent[0][1]["$max"] == {"threads.c1.last_seq": 7, "threads.c1.assist_seq": 7}
    assert by_agent[0][1]["$min"]["due_at"] == T0
    assert "due_at" not in by_agent[0][1]["$setOnInsert"] and "threads" not in by_agent[0][1]["$setOnInsert"]
    assert ("bob", {"$max": {"threads.c1.read_seq": 7}}) in [(a, {"$max": u["$max"]}) for a, u in by_agent]
    assert set(with_defaults("a", {"$set": {"status": "away"}, "$inc": {"version": 1}})["$setOnInsert"]).isdisjoint(
        {"status", "version"})


def test_the_webhook_carries_metadata_and_a_preview_only_when_allowed():
    doc = agent(waiting("c1", 2, T0), email=None)
    claim = decide(doc, T0 + 60 * S, POLICY, Prefs()).claimed["webhook"]
    meta = {"c1": {"related": {"type": "ticket", "id": "T-9", "title": "Printer"}}}
    kwargs = dict(tenant_id="t1", agent_id="alice", agent_name="Alice", claim=claim, meta=meta,
                  names={"bob": "Bob"}, url_template="https://im.example/#/im/{conversation_id}")
    body = json.loads(webhook_body(include_bodies=False, **kwargs))
    NotificationWebhook.model_validate(body)
    thread = body["threads"][0]
    assert thread["preview"] is None and thread["related"]["id"] == "T-9" and thread["unread"] == 2
    assert thread["last_sender"] == {"id": "bob", "display_name": "Bob"} and thread["url"].endswith("/#/im/c1")
    assert body["id"] == claim["key"] and body["agent"]["id"] == "alice"
    assert json.loads(webhook_body(include_bodies=True, **kwargs))["threads"][0]["preview"] == "the printer is on fire"


def test_the_signature_is_hmac_sha256_over_timestamp_and_body():
    header = sign("s3cret-s3cret-s3cret", 1700000000, b'{"a":1}')
    expected = hmac.new(b"s3cret-s3cret-s3cret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_the_digest_email_has_text_and_html_and_no_body_in_metadata_mode():
    doc = agent(waiting("c1", 6, T0), waiting("c2", 4, T0))
    claim = decide(doc, T0 + 60 * S, POLICY, Prefs()).claimed["email"]
    message = digest_email(sender="IM <n@x.test>", to="a@x.test", agent_name="Alice", claim=claim,
                           meta={"c1": {"related": {"type": "chat", "id": "CH-1", "title": None}}},
                           names={"bob": "Bob <b>"}, include_bodies=False, url_template="https://im/#/im/{conversation_id}")
    assert message["Subject"] == "10 messages in 2 threads are waiting for you"
    assert message["Message-ID"] == f"<{claim['key']}@notifier.helpdesk-im>"
    text = message.get_body(("plain",)).get_content()
    markup = message.get_body(("html",)).get_content()
    assert "6 messages from Bob <b> about Chat CH-1" in text and "https://im/#/im/c1" in text
    assert "Bob &lt;b&gt;" in markup and '<a href="https://im/#/im/c2">' in markup
    assert "fire" not in text and "fire" not in markup


@pytest.mark.parametrize("url, why", [
    ("https://hooks.example.com/im", None),
    ("http://hooks.example.com/im", "must be an https URL"),
    ("https://10.1.2.3/im", "points at a private, loopback or link-local address"),
    ("https://127.0.0.1:8443/im", "points at a private, loopback or link-local address"),
    ("https://169.254.169.254/latest/meta-data", "points at a private, loopback or link-local address"),
    ("https://[::1]/im", "points at a private, loopback or link-local address"),
    ("https://[::ffff:10.0.0.1]/im", "points at a private, loopback or link-local address"),
    ("https://100.64.0.1/im", "points at a private, loopback or link-local address"),
    ("https://[64:ff9b::a9fe:a9fe]/im", "points at a private, loopback or link-local address"),
    ("https://[2002:7f00:1::]/im", "points at a private, loopback or link-local address"),
    ("https://[::7f00:1]/im", "points at a private, loopback or link-local address"),
    ("https://[2001:4860:4860::8888]/im", None),
    ("https://[64:ff9b::808:808]/im", None),
    ("https://localhost/im", "points at an internal host name"),
    ("https://db.internal/im", "points at an internal host name"),
    ("https://user:pw@hooks.example.com/im", "must not carry credentials (the request is signed instead)"),
    ("ftp://hooks.example.com/im", "must be an https URL"),
    ("https:///im", "has no host"),
    ("https://hooks.example.com:99999/im", "is not a valid URL"),
])
def test_webhook_urls(url, why):
    assert check_url(url) == why


def test_an_operator_may_allow_a_network_and_plain_http():
    allowed = networks(["127.0.0.1/32", " 10.0.5.0/24 ", ""])
    assert check_url("http://127.0.0.1:9000/hook", allow_http=True, allowed=allowed) is None
    assert check_url("https://10.0.5.7/hook", allowed=allowed) is None
    assert check_url("https://10.0.6.7/hook", allowed=allowed) is not None
    assert address_allowed("93.184.216.34") and not address_allowed("192.168.1.1")
    assert not address_allowed("224.0.0.1") and address_allowed("127.0.0.1", allowed)


def test_a_claim_put_off_while_every_send_slot_is_taken_counts_no_attempt():
    doc = agent(waiting("c1", 1, T0), email=None)
    key = decide(doc, T0 + 60 * S, POLICY, Prefs()).claimed["webhook"]["key"]
    assert attempt_deferred(doc, "webhook", key, T0 + 62 * S, POLICY)
    assert doc.outgoing["webhook"]["attempts"] == 0 and doc.due_at == T0 + 62 * S
    assert ready_claims(doc, T0 + 61 * S) == []
    assert attempt_started(doc, "webhook", key, T0 + 62 * S, 15 * S, POLICY)
    assert not attempt_deferred(doc, "webhook", key, T0 + 64 * S, POLICY)  # leased: the attempt runs
    assert not attempt_deferred(doc, "webhook", "another-key", T0 + 64 * S, POLICY)


def test_leaving_asks_for_a_look_only_where_the_tenant_notifies():
    on = update_for_presence(agent_id="a", status="away", at=T0, due_after=60 * S)
    assert on["$min"] == {"absent_since": T0, "due_at": T0 + 60 * S}
    off = update_for_presence(agent_id="a", status="offline", at=T0, due_after=None)
    assert off["$min"] == {"absent_since": T0} and off["$setOnInsert"]["due_at"] == NEVER
    back = update_for_presence(agent_id="a", status="online", at=T0, due_after=60 * S)
    assert back["$set"]["absent_since"] == NEVER and "$min" not in back
