"""RFC 6962 / RFC 9162 proof vectors from transparency-dev/merkle, run through our verifiers.

The vectors live beside the repository in ../shared/vectors/rfc6962 (copied unchanged from
github.com/transparency-dev/merkle, folder testdata/, commit 417fb0c3, Apache-2.0). Our verifiers
must accept exactly the cases without `wantErr` and raise `VerificationError` for every other one.
A missing vector directory is a failure, never a skip.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import VerificationError
from protocol.merkle import verify_consistency, verify_inclusion

REPO_ROOT = Path(__file__).resolve().parents[2]
VECTORS = REPO_ROOT.parent / "shared" / "vectors" / "rfc6962"
CASES = sorted(VECTORS.rglob("*.json")) if VECTORS.is_dir() else []


def load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return case


def b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def run(case: dict[str, Any]) -> None:
    proof = [b64(h) for h in case["proof"] or []]
    if "leafIdx" in case:
        verify_inclusion(b64(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, b64(case["root"]))
    else:
        verify_consistency(case["size1"], case["size2"], proof, b64(case["root1"]), b64(case["root2"]))


def test_the_vector_directory_is_present_and_complete() -> None:
    assert VECTORS.is_dir(), f"missing RFC 6962 vectors at {VECTORS}"
    kinds = {path.relative_to(VECTORS).parts[0] for path in CASES}
    assert kinds == {"inclusion", "consistency"}
    assert len(CASES) >= 190
    accepted = [path for path in CASES if not load(path)["wantErr"]]
    assert len(accepted) == 12
    assert len(CASES) - len(accepted) >= 170


@pytest.mark.parametrize("path", CASES, ids=lambda p: str(p.relative_to(VECTORS)))
def test_verifier_accepts_exactly_the_valid_proofs(path: Path) -> None:
    case = load(path)
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            run(case)
    else:
        run(case)
