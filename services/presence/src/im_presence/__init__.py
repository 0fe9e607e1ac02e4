"""Helpdesk IM presence: who is online / away / offline, per tenant, from gateway connection events."""
