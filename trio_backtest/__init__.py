"""Trio client, local server and fault lab for the Solana backtest WebSocket protocol."""

from __future__ import annotations

__version__ = "0.1.0"
