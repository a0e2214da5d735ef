"""Interception of agents' model traffic: an embedded mitmproxy, responders and the call recorder."""

from kwaigym.proxy.recorder import CallRecord, Recorder
from kwaigym.proxy.responders import (
    CallContext,
    GymResponder,
    Responder,
    ScriptedResponder,
    UpstreamError,
    UpstreamResponder,
)
from kwaigym.proxy.server import CA_ENV_VARS, EpisodeRoute, InterceptionProxy

__all__ = [
    "CA_ENV_VARS",
    "CallContext",
    "CallRecord",
    "EpisodeRoute",
    "GymResponder",
    "InterceptionProxy",
    "Recorder",
    "Responder",
    "ScriptedResponder",
    "UpstreamError",
    "UpstreamResponder",
]
