"""The CaseBridge broker: an aiohttp service relaying end-to-end encrypted envelopes.

It never sees plaintext or a private key of an agency.
"""
