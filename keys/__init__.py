"""Key lifecycle on top of `protocol`: identities, sealed keystores, certification, rotation,
revocation and fingerprints a person can read aloud."""
