"""The exceptions a managed session raises."""

from __future__ import annotations

__all__ = [
    "ContinueSendError",
    "ControlClosedError",
    "ControlFailedError",
    "ManagedSessionError",
    "NotReadyError",
    "SessionCreateError",
    "SubscriptionFailedError",
]


class ManagedSessionError(Exception):
    """Base of every error a managed session reports."""


class SessionCreateError(ManagedSessionError):
    """The server refused to create the session, or never answered the create."""


class ControlClosedError(ManagedSessionError):
    """The server ended the session's control connection for good (normal closure)."""


class ControlFailedError(ManagedSessionError):
    """The control connection failed and could not be recovered."""


class SubscriptionFailedError(ManagedSessionError):
    """A data-plane subscription failed and could not be recovered."""


class ContinueSendError(ManagedSessionError):
    """A continue could not be handed to the control connection (it has ended)."""


class NotReadyError(ManagedSessionError):
    """A continue while the session is not ready; nothing was sent."""
