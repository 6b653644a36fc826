"""What agencies and security officers run: the client library, the CLI, the desk, the auditor."""
