"""Helpdesk IM notifier: tells an away or offline agent that a message is waiting for them."""
