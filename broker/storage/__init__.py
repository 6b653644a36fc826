"""Broker storage: small async interfaces per domain (`interfaces`), the records they exchange
(`records`), the engines implementing them (`sqlite`, `postgresql`), and `factory`, which opens
the engine the settings name."""
