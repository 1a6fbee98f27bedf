"""The bridge service: the state machine over the store, the in-memory indexes and the feed."""

from desktop_api.service.errors import NotFound
from desktop_api.service.facade import BridgeService
from desktop_api.service.registry import hash_token

__all__ = ["BridgeService", "NotFound", "hash_token"]
