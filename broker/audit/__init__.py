"""The broker's audit log: leaf formats now; the Merkle tree and checkpoints build on the same
stored leaves later."""
