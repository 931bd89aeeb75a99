"""Signed messages between components: envelopes, the bus, retries and dead letters."""

from sctk.bus.bus import Bus, Subscription, bus_for_url, get_bus, shutdown_all
from sctk.bus.envelope import BROADCAST, Envelope, InvalidEnvelope, sign, verify

__all__ = [
    "BROADCAST",
    "Bus",
    "Envelope",
    "InvalidEnvelope",
    "Subscription",
    "bus_for_url",
    "get_bus",
    "shutdown_all",
    "sign",
    "verify",
]
