"""The `casebridge` command: a thin dispatcher over the subcommands each package owns.

It sits outside `protocol`, `keys`, `broker` and `clients` so that the one-way import rule
between them holds: only this dispatcher sees both `broker` and `clients`.
"""

__version__ = "0.1.0"
