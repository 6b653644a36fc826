"""The broker's handlers' logic, independent of HTTP: registration, submission, inboxes,
receipts and retention. Web handlers parse, call these, and render."""
