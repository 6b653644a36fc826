"""`casebridge desk`: the focal point's local web app (see docs/desk.md and `clients.desk.app`).

Importing this package is cheap; the web app is imported only when the command runs.
"""
