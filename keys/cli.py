"""Subcommands owned by `keys`."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add `casebridge keys ...` to the `casebridge` command."""
