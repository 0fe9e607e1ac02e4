"""What a notification says: the webhook's JSON body and the digest email (plain text + HTML).

Pure. Bodies appear only as `preview`, and only when the tenant allows them; everything else is
metadata (who, which thread, which ticket or chat, how many).
"""

from __future__ import annotations

import html
import json
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

from im_contracts.models import to_rfc3339
from im_contracts.notifications import PREVIEW_MAX_CHARS, NotificationWebhook


def thread_url(template: str, conversation_id: str) -> str | None:
    """The console's link to a thread from the operator's template ("...{conversation_id}")."""
    return template.replace("{conversation_id}", quote(conversation_id, safe="")) if template else None


def _name(names: dict[str, str], agent_id: str | None) -> str | None:
    return names.get(agent_id) if agent_id else None


def webhook_body(*, tenant_id: str, agent_id: str, agent_name: str | None, claim: dict[str, Any],
                 meta: dict[str, dict[str, Any]], names: dict[str, str], include_bodies: bool,
                 url_template: str) -> bytes:
    """`meta`: conversation id -> {"related": ... | None}; `names`: agent id -> display name."""
    threads = []
    for item in claim["threads"]:
        cid = item["conversation_id"]
        preview = item.get("preview") if include_bodies else None
        threads.append({
            "conversation_id": cid, "url": thread_url(url_template, cid),
            "related": (meta.get(cid) or {}).get("related"), "unread": item["unread"],
            "first_unread_seq": item["first_unread_seq"], "last_seq": item["last_seq"],
            "last_message_at": item["last_at"],
            "last_sender": {"id": item.get("last_sender") or "", "display_name": _name(names, item.get("last_sender"))},
            "assistance": bool(item.get("assistance")),
            "preview": preview[:PREVIEW_MAX_CHARS] if preview else None,
        })
    body = NotificationWebhook(id=claim["key"], tenant_id=tenant_id,
                               agent={"id": agent_id, "display_name": agent_name},
                               created_at=claim["created_at"], threads=threads)
    return body.model_dump_json().encode()


def _related_text(related: dict[str, Any] | None) -> str:
    if not related:
        return ""
    kind = "Ticket" if related.get("type") == "ticket" else "Chat"
    title = f" — {related['title']}" if related.get("title") else ""
    return f"{kind} {related.get('id')}{title}"


def _one_line(text: str) -> str:
    """A header value from names agents chose: no line breaks or other control characters."""
    return "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in text).strip()


def subject(claim: dict[str, Any], names: dict[str, str]) -> str:
    return _one_line(_subject(claim, names))


def _subject(claim: dict[str, Any], names: dict[str, str]) -> str:
    items = claim["threads"]
    if any(i.get("assistance") for i in items):
        asker = _name(names, items[0].get("last_sender")) or items[0].get("last_sender") or "An agent"
        return f"{asker} is asking for your help" if len(items) == 1 else f"{len(items)} threads need you, one asks for help"
    total = sum(i["unread"] for i in items)
    if len(items) == 1:
        who = _name(names, items[0].get("last_sender")) or items[0].get("last_sender") or "An agent"
        return f"{who} sent you {total} message{'s' if total != 1 else ''}"
    return f"{total} messages in {len(items)} threads are waiting for you"


def digest_email(*, sender: str, to: str, agent_name: str | None, claim: dict[str, Any],
                 meta: dict[str, dict[str, Any]], names: dict[str, str], include_bodies: bool,
                 url_template: str, product: str = "Helpdesk IM") -> EmailMessage:
    """One email for every thread the claim holds. Its Message-ID derives from the claim's key, so
    a retry after a crash is recognisably the same email."""
    lines, blocks = [], []
    for item in claim["threads"]:
        cid = item["conversation_id"]
        who = _name(names, item.get("last_sender")) or item.get("last_sender") or "someone"
        related = _related_text((meta.get(cid) or {}).get("related"))
        url = thread_url(url_template, cid)
        count = item["unread"]
        head = f"{count} message{'s' if count != 1 else ''} from {who}" + (f" about {related}" if related else "")
        if item.get("assistance"):
            head = "Assistance requested: " + head
        preview = (item.get("preview") or "")[:PREVIEW_MAX_CHARS] if include_bodies else ""
        lines.append(f"- {head}" + (f"\n  \"{preview}\"" if preview else "") + (f"\n  {url}" if url else ""))
        blocks.append(
            "<li>" + (f'<a href="{html.escape(url)}">' if url else "") + html.escape(head) + ("</a>" if url else "")
            + (f"<br><q>{html.escape(preview)}</q>" if preview else "") + "</li>")
    greeting = f"Hello {agent_name}," if agent_name else "Hello,"
    intro = "While you were away, these threads got messages you have not read yet:"
    text = f"{greeting}\n\n{intro}\n\n" + "\n".join(lines) + f"\n\n— {product}\n"
    markup = (f"<p>{html.escape(greeting)}</p><p>{html.escape(intro)}</p><ul>" + "".join(blocks)
              + f"</ul><p>— {html.escape(product)}</p>")
    message = EmailMessage()
    message["Subject"] = subject(claim, names)
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(claim["created_at"])
    message["Message-ID"] = f"<{claim['key']}@notifier.helpdesk-im>"
    message["X-IM-Notification"] = claim["key"]
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    message.set_content(text)
    message.add_alternative(f"<!doctype html><html><body>{markup}</body></html>", subtype="html")
    return message


def dead_letter_value(claim: dict[str, Any]) -> bytes:
    """What a dead letter keeps of a notification that never went out: its metadata, no preview."""
    return json.dumps({"key": claim["key"], "channel": claim["channel"], "attempts": claim["attempts"],
                       "created_at": to_rfc3339(claim["created_at"]), "error": claim.get("error"),
                       "threads": [{k: v for k, v in t.items() if k != "preview"} | {"last_at": to_rfc3339(t["last_at"])}
                                   for t in claim["threads"]]}).encode()
