"""The PostgreSQL storage engine (asyncpg, pooled): one database that several broker replicas
share, blobs included. Chosen by `database_url` in the settings (`broker.storage.factory`)."""

from broker.storage.postgresql.store import PostgresStore, open_postgres_store

__all__ = ["PostgresStore", "open_postgres_store"]
