"""The sans-I/O core of CaseBridge: pure functions over bytes and an explicit time.

This package imports no asyncio, network, database or file-I/O module (a test enforces it):
everything here takes bytes and `now` and returns frozen objects or raises a
`protocol.errors.CaseBridgeError`.
"""
