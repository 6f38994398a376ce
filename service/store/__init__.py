"""Durable conversations: the ConversationStore interface and its SQLite and PostgreSQL backends."""

from service.store.base import (
    Conversation,
    ConversationStore,
    NewMessage,
    StoredMessage,
    UsageTotals,
    UserProfileRecord,
)
from service.store.factory import open_store
from service.store.postgres import PostgresStore
from service.store.sqlite import SqliteStore

__all__ = [
    "Conversation",
    "ConversationStore",
    "NewMessage",
    "PostgresStore",
    "SqliteStore",
    "StoredMessage",
    "UsageTotals",
    "UserProfileRecord",
    "open_store",
]
