"""The one error hierarchy of CaseBridge.

Every error a user can meet carries a stable machine code (an `ErrorCode`), the HTTP status a
broker answers with, a short human title and a detail that says what to do about it. Errors
are grouped by origin: input, authentication, cryptography, keys, storage, upstream.

Cryptographic failures are opaque to whoever sent the bad bytes (one code per class) but keep a
precise `reason` for our own logs. `reason` never contains key material or plaintext.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable error codes. Never renamed once released: clients match on them."""

    # input
    MALFORMED_INPUT = "malformed_input"
    INVALID_FIELD = "invalid_field"
    TOO_LARGE = "too_large"
    CONFLICT = "conflict"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    INVALID_TRANSITION = "invalid_transition"
    CONSENT_REQUIRED = "consent_required"
    # authentication and authorisation
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    # cryptography and trust
    BAD_SIGNATURE = "bad_signature"
    DECRYPTION_FAILED = "decryption_failed"
    UNTRUSTED_CERTIFICATE = "untrusted_certificate"
    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    KEY_REVOKED = "key_revoked"
    NOT_A_RECIPIENT = "not_a_recipient"
    ENVELOPE_EXPIRED = "envelope_expired"
    REPLAYED = "replayed"
    UNSUPPORTED_VERSION = "unsupported_version"
    # keys at rest
    WRONG_PASSPHRASE = "wrong_passphrase"
    KEYSTORE_CORRUPTED = "keystore_corrupted"
    WRONG_KEYSTORE_KIND = "wrong_keystore_kind"
    # storage and upstream
    STORAGE_UNAVAILABLE = "storage_unavailable"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    INTERNAL = "internal"


class CaseBridgeError(Exception):
    """Root of every CaseBridge error.

    `detail` is safe to show to the caller. `reason` is for our logs only.
    """

    code: ErrorCode = ErrorCode.INTERNAL
    status: int = 500
    title: str = "Internal error"
    remedy: str = "Try again later; if it persists, give the operator the request id."
    public_reason: bool = False
    """Input errors show their precise reason to the caller; crypto errors stay opaque."""

    def __init__(self, detail: str | None = None, *, reason: str | None = None) -> None:
        if detail is None:
            detail = f"{reason}. {self.remedy}" if self.public_reason and reason else self.remedy
        self.detail = detail
        self.reason = reason if reason is not None else detail
        super().__init__(self.detail)

    def __str__(self) -> str:
        return f"{self.title}: {self.detail}"


# --- input -------------------------------------------------------------------------------


class InputError(CaseBridgeError):
    """The caller sent something we cannot accept. Nothing was changed."""

    code = ErrorCode.INVALID_FIELD
    status = 400
    title = "Invalid input"
    remedy = "Correct the named field and send again."
    public_reason = True


class MalformedInput(InputError):
    """Bytes that do not decode as the structure expected. The one error every codec raises."""

    code = ErrorCode.MALFORMED_INPUT
    title = "Malformed input"
    remedy = "The data is not a well-formed CaseBridge structure; send it unmodified."


class InvalidField(InputError):
    """A well-formed structure with a field whose value is not allowed."""

    def __init__(self, field: str, expected: str) -> None:
        self.field = field
        self.expected = expected
        super().__init__(f"field '{field}': expected {expected}.")


class TooLarge(InputError):
    code = ErrorCode.TOO_LARGE
    status = 413
    title = "Too large"
    remedy = "Send less: split the attachments or compress the documents."


class Conflict(InputError):
    code = ErrorCode.CONFLICT
    status = 409
    title = "Conflict"
    remedy = "This id was already used for different content; use a new id."


class NotFound(InputError):
    code = ErrorCode.NOT_FOUND
    status = 404
    title = "Not found"
    remedy = "Check the id; it may have been purged after its retention time."


class RateLimited(InputError):
    code = ErrorCode.RATE_LIMITED
    status = 429
    title = "Too many requests"
    remedy = "Slow down and retry after the time given in Retry-After."


class InvalidTransition(InputError):
    """A referral message that the case's current state does not allow (or not from this side).

    `reason` names the current state and the messages it allows; nothing was changed."""

    code = ErrorCode.INVALID_TRANSITION
    status = 409
    title = "Not allowed in this case state"
    remedy = "Refresh the case and send one of the messages its current state allows."

    def __init__(self, reason: str, *, state: str = "", allowed: tuple[str, ...] = ()) -> None:
        self.state = state
        self.allowed = allowed
        super().__init__(reason=reason)


class ConsentError(InputError):
    """A referral message carries fields the person's consent does not cover for this recipient
    (a scope not granted or withdrawn, an item withheld, or sensitive data without explicit
    consent), and no valid override covers them. Nothing was sent or applied."""

    code = ErrorCode.CONSENT_REQUIRED
    status = 403
    title = "Consent required"
    remedy = "Remove the named fields, record the person's consent, or record an override with a reason."

    def __init__(self, reason: str, *, fields: tuple[str, ...] = ()) -> None:
        self.fields = fields
        super().__init__(reason=reason)


# --- authentication ----------------------------------------------------------------------


class AuthError(CaseBridgeError):
    code = ErrorCode.UNAUTHENTICATED
    status = 401
    title = "Not authenticated"
    remedy = "Sign the request with your agency's current certified key."


class Forbidden(AuthError):
    code = ErrorCode.FORBIDDEN
    status = 403
    title = "Forbidden"
    remedy = "Your certificate's roles do not allow this; ask your national authority."


# --- cryptography and trust ---------------------------------------------------------------


class VerificationError(CaseBridgeError):
    """Something signed, encrypted or certified did not verify. Always fail closed."""

    code = ErrorCode.BAD_SIGNATURE
    status = 422
    title = "Verification failed"
    remedy = "The data was altered or not made by who it claims; do not trust it."


class DecryptionFailed(VerificationError):
    """One opaque error for every way decryption can fail."""

    code = ErrorCode.DECRYPTION_FAILED
    title = "Decryption failed"
    remedy = "The envelope is damaged or not meant for this key; ask the sender to resend."


class UntrustedCertificate(VerificationError):
    code = ErrorCode.UNTRUSTED_CERTIFICATE
    title = "Untrusted certificate"
    remedy = "The certificate does not chain to a pinned national root; verify fingerprints."


class CertificateExpired(UntrustedCertificate):
    code = ErrorCode.CERTIFICATE_EXPIRED
    title = "Certificate expired"
    remedy = "Ask the agency to renew its certificate with its national authority."


class CertificateNotYetValid(UntrustedCertificate):
    code = ErrorCode.CERTIFICATE_NOT_YET_VALID
    title = "Certificate not yet valid"
    remedy = "Check this machine's clock, or wait until the certificate's start time."


class KeyRevoked(UntrustedCertificate):
    code = ErrorCode.KEY_REVOKED
    title = "Key revoked"
    remedy = "The key was revoked by its national authority; refresh the directory."


class NotARecipient(VerificationError):
    code = ErrorCode.NOT_A_RECIPIENT
    title = "Not a recipient"
    remedy = "This envelope is not addressed to this agency's current keys."


class EnvelopeExpired(VerificationError):
    code = ErrorCode.ENVELOPE_EXPIRED
    title = "Envelope expired"
    remedy = "Ask the sender to send the referral again."


class Replayed(VerificationError):
    code = ErrorCode.REPLAYED
    status = 409
    title = "Replayed"
    remedy = "This envelope or request was already processed; nothing more to do."


class UnsupportedVersion(VerificationError):
    code = ErrorCode.UNSUPPORTED_VERSION
    status = 400
    title = "Unsupported version"
    remedy = "Upgrade CaseBridge on the side that produced this data."


# --- keys at rest ------------------------------------------------------------------------


class KeystoreError(CaseBridgeError):
    code = ErrorCode.KEYSTORE_CORRUPTED
    status = 400
    title = "Keystore corrupted"
    remedy = "Restore the keystore file from its backup."


class WrongPassphrase(KeystoreError):
    code = ErrorCode.WRONG_PASSPHRASE
    title = "Wrong passphrase"
    remedy = "Check the passphrase (keyboard layout, caps lock) and try again."


class KeystoreCorrupted(KeystoreError):
    pass


class WrongKeystoreKind(KeystoreError):
    code = ErrorCode.WRONG_KEYSTORE_KIND
    title = "Wrong kind of keystore"
    remedy = "Give the keystore file that this command expects."


# --- storage and upstream ----------------------------------------------------------------


class StorageUnavailable(CaseBridgeError):
    code = ErrorCode.STORAGE_UNAVAILABLE
    status = 503
    title = "Storage unavailable"
    remedy = "Retry after the time given in Retry-After; nothing acknowledged was lost."


class UpstreamUnavailable(CaseBridgeError):
    code = ErrorCode.UPSTREAM_UNAVAILABLE
    status = 502
    title = "Broker unreachable"
    remedy = "The message stays in the outbox and is sent when the broker is reachable."


# --- configuration and time limits -------------------------------------------------------


class ConfigError(InputError):
    """A setting (from a file or the environment) is missing or has a value that is not allowed.
    Raised once, at start, before anything is served."""

    title = "Invalid configuration"
    remedy = "Correct the named setting in the configuration file or its CASEBRIDGE_* variable."


class RequestTimeout(InputError):
    """The caller stopped sending in the middle of a request. Nothing was changed."""

    code = ErrorCode.TIMEOUT
    status = 408
    title = "Request timeout"
    remedy = "Check the connection and send the request again."
