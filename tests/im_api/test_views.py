"""What a reader sees of the stored documents (im_api.views), without a server: each reader's
own read state, names joined by id, the message in its contract shape."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from im_api.views import conversation_view, last_read, message_view, read_state
from im_runtime.mongo import field_name

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
MESSAGE = {"_id": "m7", "conversation_id": "c1", "seq": 7, "sender_id": "ana", "body": "done?", "kind": "text",
           "client_msg_id": "k7", "created_at": AT, "tenant_id": "acme"}
THREAD = {"_id": "c1", "tenant_id": "acme", "participants": ["ana", "ben.k", "gone"], "related": None,
          "created_by": "ana", "created_at": AT, "last_seq": 7, "last_message": MESSAGE, "last_message_at": AT,
          "read": {field_name("ana"): 7, field_name("ben.k"): 3}}


def test_each_reader_sees_its_own_marker_and_unread_count():
    assert [last_read(THREAD, a) for a in ("ana", "ben.k", "cy")] == [7, 3, 0]
    assert read_state(7, 3) == {"last_read_seq": 3, "unread_count": 4}
    assert read_state(7, 9) == {"last_read_seq": 9, "unread_count": 0}, "never a negative count"
    ben = conversation_view(THREAD, "ben.k", {"ana": "Ana", "ben.k": "Ben"})
    assert (ben["last_read_seq"], ben["unread_count"]) == (3, 4)
    ana = conversation_view(THREAD, "ana", {})
    assert (ana["last_read_seq"], ana["unread_count"]) == (7, 0)


def test_a_thread_names_its_agents_and_shows_an_unknown_one_by_id():
    view = conversation_view(THREAD, "ana", {"ana": "Ana", "ben.k": "Ben"})
    assert view["participants"] == [{"id": "ana", "display_name": "Ana"}, {"id": "ben.k", "display_name": "Ben"},
                                    {"id": "gone", "display_name": "gone"}]
    assert view["id"] == "c1" and view["last_seq"] == 7


def test_a_message_has_the_contract_shape_and_no_storage_fields():
    view = message_view(MESSAGE)
    assert view == {"id": "m7", "conversation_id": "c1", "seq": 7, "sender_id": "ana", "body": "done?",
                    "kind": "text", "client_msg_id": "k7", "created_at": AT, "edited_at": None, "deleted_at": None,
                    "redacted_at": None}
    assert conversation_view(THREAD, "ana", {})["last_message"] == view
    assert conversation_view({**THREAD, "last_message": None}, "ana", {})["last_message"] is None
