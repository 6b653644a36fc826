"""Broker storage: small async interfaces per domain (`interfaces`), the records they exchange
(`records`), and the engines implementing them (`sqlite`; PostgreSQL later)."""
