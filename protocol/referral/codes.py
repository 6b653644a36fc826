"""The coded values referral messages carry.

Every code is a stable lower-case ASCII string: messages, case stores and exports keep them, so a
code is never renamed or reused once released; a new meaning gets a new code (and a new schema
version for the messages that may carry it). Labels in Thai, Lao and English belong to the
clients, keyed by these codes.
"""

from __future__ import annotations

from enum import StrEnum


class MessageType(StrEnum):
    REFERRAL = "referral"
    ACKNOWLEDGEMENT = "acknowledgement"
    ACCEPTANCE = "acceptance"
    DECLINE = "decline"
    INFO_REQUEST = "info_request"
    INFO_RESPONSE = "info_response"
    VERIFICATION_REQUEST = "verification_request"
    VERIFICATION_RESULT = "verification_result"
    FAMILY_ASSESSMENT_REQUEST = "family_assessment_request"
    FAMILY_ASSESSMENT_RESULT = "family_assessment_result"
    REPATRIATION_PLAN = "repatriation_plan"
    REPATRIATION_CONFIRMATION = "repatriation_confirmation"
    HANDOVER_RECORD = "handover_record"
    REINTEGRATION_PLAN = "reintegration_plan"
    CASE_UPDATE = "case_update"
    CONSENT_CHANGE = "consent_change"
    CASE_CLOSURE = "case_closure"
    CASE_REOPEN = "case_reopen"


class Sex(StrEnum):
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNKNOWN = "unknown"


class DocumentKind(StrEnum):
    PASSPORT = "passport"
    NATIONAL_ID_CARD = "national_id_card"
    HOUSEHOLD_REGISTER = "household_register"
    BIRTH_CERTIFICATE = "birth_certificate"
    # A border pass is a travel document; the linter reads "pass" as a password.
    BORDER_PASS = "border_pass"  # noqa: S105
    TEMPORARY_TRAVEL_DOCUMENT = "temporary_travel_document"
    OTHER = "other"


class ExploitationForm(StrEnum):
    SEXUAL_EXPLOITATION = "sexual_exploitation"
    FORCED_LABOUR = "forced_labour"
    DOMESTIC_SERVITUDE = "domestic_servitude"
    FORCED_MARRIAGE = "forced_marriage"
    FISHING_INDUSTRY = "fishing_industry"
    FORCED_BEGGING = "forced_begging"
    OTHER = "other"


class ReturnWish(StrEnum):
    WANTS_TO_RETURN = "wants_to_return"
    UNDECIDED = "undecided"
    DOES_NOT_WANT_TO_RETURN = "does_not_want_to_return"


class RequestedAction(StrEnum):
    VERIFY_NATIONALITY = "verify_nationality"
    ISSUE_TRAVEL_DOCUMENT = "issue_travel_document"
    TRACE_FAMILY = "trace_family"
    ASSESS_FAMILY = "assess_family"
    REPATRIATE = "repatriate"
    REINTEGRATE = "reintegrate"
    LEGAL_ASSISTANCE = "legal_assistance"


class DeclineReason(StrEnum):
    NOT_A_NATIONAL = "not_a_national"
    IDENTITY_UNCONFIRMED = "identity_unconfirmed"
    DUPLICATE_REFERRAL = "duplicate_referral"
    OUTSIDE_MANDATE = "outside_mandate"
    INSUFFICIENT_INFORMATION = "insufficient_information"
    OTHER = "other"


class VerificationSubject(StrEnum):
    NATIONALITY = "nationality"
    TRAVEL_DOCUMENT = "travel_document"
    NATIONALITY_AND_TRAVEL_DOCUMENT = "nationality_and_travel_document"


class VerificationOutcome(StrEnum):
    VERIFIED = "verified"
    NOT_VERIFIED = "not_verified"


class AssessmentOutcome(StrEnum):
    FORWARDED_TO_PROVINCE = "forwarded_to_province"
    COMPLETED = "completed"
    NOT_FOUND = "not_found"


class FamilyRelation(StrEnum):
    MOTHER = "mother"
    FATHER = "father"
    SPOUSE = "spouse"
    SIBLING = "sibling"
    CHILD = "child"
    GRANDPARENT = "grandparent"
    AUNT_OR_UNCLE = "aunt_or_uncle"
    OTHER_RELATIVE = "other_relative"
    LEGAL_GUARDIAN = "legal_guardian"


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Recommendation(StrEnum):
    RETURN_TO_FAMILY = "return_to_family"
    ALTERNATIVE_CARE = "alternative_care"
    SHELTER = "shelter"


class CrossingPoint(StrEnum):
    """Thai-Lao crossings used for handovers (Thai side, Lao side)."""

    NONG_KHAI_VIENTIANE = "nong_khai_vientiane"  # First Friendship Bridge
    MUKDAHAN_SAVANNAKHET = "mukdahan_savannakhet"  # Second Friendship Bridge
    NAKHON_PHANOM_THAKHEK = "nakhon_phanom_thakhek"  # Third Friendship Bridge
    CHIANG_KHONG_HOUAYXAY = "chiang_khong_houayxay"  # Fourth Friendship Bridge
    CHONG_MEK_VANGTAO = "chong_mek_vangtao"
    OTHER = "other"


class MedicalFitness(StrEnum):
    FIT_TO_TRAVEL = "fit_to_travel"
    FIT_WITH_SUPPORT = "fit_with_support"
    NOT_FIT_TO_TRAVEL = "not_fit_to_travel"


class RepatriationAction(StrEnum):
    CONFIRM = "confirm"
    COUNTER_PROPOSE = "counter_propose"
    SCHEDULE = "schedule"
    POSTPONE = "postpone"
    CANCEL = "cancel"


class HandoverOutcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"


class Service(StrEnum):
    SHELTER = "shelter"
    MEDICAL_CARE = "medical_care"
    PSYCHOSOCIAL_SUPPORT = "psychosocial_support"
    VOCATIONAL_TRAINING = "vocational_training"
    EDUCATION = "education"
    LEGAL_AID = "legal_aid"
    LIVELIHOOD_SUPPORT = "livelihood_support"
    FAMILY_MEDIATION = "family_mediation"
    CASE_MANAGEMENT = "case_management"


class UpdateKind(StrEnum):
    COURT_DATE = "court_date"
    COMPENSATION = "compensation"
    FOLLOW_UP = "follow_up"
    CMM_DECISION = "cmm_decision"
    RE_TRAFFICKING_ALERT = "re_trafficking_alert"
    OTHER = "other"


class ClosureReason(StrEnum):
    REINTEGRATED = "reintegrated"
    CHOSE_NOT_TO_RETURN = "chose_not_to_return"
    REFERRAL_DECLINED = "referral_declined"
    REFERRAL_WITHDRAWN = "referral_withdrawn"
    PERSON_UNREACHABLE = "person_unreachable"
    TRANSFERRED = "transferred"
    OTHER = "other"


class LegalBasis(StrEnum):
    """The lawful basis for processing (PDPA s.24 and s.26)."""

    CONSENT = "consent"
    EXPLICIT_CONSENT = "explicit_consent"
    VITAL_INTEREST = "vital_interest"
    PUBLIC_TASK = "public_task"
    LEGAL_OBLIGATION = "legal_obligation"


class ConsentGiver(StrEnum):
    PERSON = "person"
    GUARDIAN = "guardian"


class GuardianRelation(StrEnum):
    PARENT = "parent"
    RELATIVE = "relative"
    LEGAL_GUARDIAN = "legal_guardian"
    SOCIAL_WORKER = "social_worker"
