"""De-identification of DICOM uploads: PS3.15 Annex E Basic Application Level Confidentiality
Profile (no options retained), applied before an upload is stored.

- Identifying attributes of the profile's table are removed (X) or emptied (Z, for Type 2
  attributes a valid object must keep): names, ids, birth date, addresses, institution,
  physicians and operators, accession and study ids, dates and times, free-text
  descriptions and comments, device identifiers.
- Every instance UID (anything not a DICOM-defined `1.2.840.10008.` UID) is replaced by
  ``2.25.<integer>`` derived from SHA-256 of a salt and the UID, so the same study keeps one
  study UID across uploads (consistent) without revealing the original (PS3.15 E.3.9).
- Private tags, overlays and curves are removed.
- Pixel data is not touched: the stored file decodes to the same pixels. Burned-in text
  cannot be removed from pixels here: BurnedInAnnotation is kept as sent and reported.
- PatientIdentityRemoved = YES and DeidentificationMethod(+CodeSequence, DCM 113100) are set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

METHOD = "PS3.15 E.1 Basic Application Level Confidentiality Profile"  # LO: <= 64
_DICOM_ROOT = "1.2.840.10008."  # SOP classes, transfer syntaxes, coding schemes: not PHI

# Type 2 attributes emptied rather than removed (PS3.15 Table E.1-1 action Z / Z-D).
ZERO = frozenset(
    """
    PatientName PatientID PatientBirthDate PatientSex AccessionNumber ReferringPhysicianName
    StudyID StudyDate StudyTime ContentDate ContentTime ContentCreatorName
    """.split()
)
# Attributes removed (action X, X/Z, X/D, X/Z/D and D for free text).
REMOVE = frozenset(
    """
    AcquisitionComments AcquisitionDate AcquisitionDateTime AcquisitionDeviceProcessingDescription
    AcquisitionTime ActualHumanPerformersSequence AdditionalPatientHistory AdmissionID
    AdmittingDate AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription AdmittingTime
    Allergies Arbitrary AuthorObserverSequence BranchOfService CommentsOnThePerformedProcedureStep
    ConsultingPhysicianName ContentSequence ContributionDescription CountryOfResidence
    CurrentPatientLocation CurveDate CurveTime CustodialOrganizationSequence DerivationDescription
    DetectorID DeviceSerialNumber DeviceDescription DischargeDiagnosisDescription
    DistributionAddress DistributionName EthnicGroup FrameComments GraphicAnnotationSequence
    HumanPerformerName HumanPerformerOrganization IconImageSequence IdentifyingComments
    ImageComments ImagePresentationComments ImagingServiceRequestComments Impressions
    InstanceCreationDate InstanceCreationTime InstanceCreatorUID InstitutionAddress
    InstitutionCodeSequence InstitutionName InstitutionalDepartmentName
    InsurancePlanIdentification IntendedRecipientsOfResultsIdentificationSequence
    InterpretationApproverSequence InterpretationAuthor InterpretationDiagnosisDescription
    InterpretationIDIssuer InterpretationRecorder InterpretationText InterpretationTranscriber
    IssuerOfAdmissionID IssuerOfPatientID IssuerOfServiceEpisodeID LastMenstrualDate
    MedicalAlerts MedicalRecordLocator MilitaryRank ModifiedAttributesSequence
    ModifyingDeviceID ModifyingDeviceManufacturer NameOfPhysiciansReadingStudy
    NamesOfIntendedRecipientsOfResults Occupation OperatorIdentificationSequence OperatorsName
    OrderCallbackPhoneNumber OrderEnteredBy OrderEntererLocation OriginalAttributesSequence
    OtherPatientIDs OtherPatientIDsSequence OtherPatientNames ParticipantSequence
    PatientAddress PatientAge PatientBirthName PatientBirthTime PatientComments
    PatientInstitutionResidence PatientInsurancePlanCodeSequence PatientMotherBirthName
    PatientPrimaryLanguageCodeSequence PatientPrimaryLanguageModifierCodeSequence
    PatientReligiousPreference PatientSexNeutered PatientSize PatientState
    PatientTelephoneNumbers PatientTransportArrangements PatientWeight
    PerformedLocation PerformedProcedureStepDescription PerformedProcedureStepEndDate
    PerformedProcedureStepEndTime PerformedProcedureStepID PerformedProcedureStepStartDate
    PerformedProcedureStepStartTime PerformedStationAETitle
    PerformedStationGeographicLocationCodeSequence
    PerformedStationName PerformedStationNameCodeSequence PerformingPhysicianIdentificationSequence
    PerformingPhysicianName PersonAddress PersonIdentificationCodeSequence PersonName
    PersonTelephoneNumbers PhysicianApprovingInterpretation PhysiciansOfRecord
    PhysiciansOfRecordIdentificationSequence PhysiciansReadingStudyIdentificationSequence
    PreMedication PregnancyStatus ProtocolName ReasonForTheImagingServiceRequest
    ReasonForStudy ReferencedDigitalSignatureSequence ReferencedPatientAliasSequence
    ReferencedPatientSequence ReferencedSOPInstanceMACSequence ReferringPhysicianAddress
    ReferringPhysicianIdentificationSequence ReferringPhysicianTelephoneNumbers RegionOfResidence
    RequestAttributesSequence RequestedContrastAgent RequestedProcedureComments
    RequestedProcedureDescription RequestedProcedureID RequestedProcedureLocation
    RequestingAE RequestingPhysician RequestingService ResponsibleOrganization
    ResponsiblePerson ResponsiblePersonRole ResultsComments ResultsDistributionListSequence
    ResultsIDIssuer ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence
    ScheduledPerformingPhysicianIdentificationSequence ScheduledPerformingPhysicianName
    ScheduledProcedureStepDescription ScheduledProcedureStepEndDate
    ScheduledProcedureStepEndTime ScheduledProcedureStepLocation ScheduledProcedureStepStartDate
    ScheduledProcedureStepStartTime ScheduledStationAETitle
    ScheduledStationGeographicLocationCodeSequence
    ScheduledStationName ScheduledStationNameCodeSequence ScheduledStudyLocation
    ScheduledStudyLocationAETitle SeriesDate SeriesDescription SeriesTime ServiceEpisodeDescription
    ServiceEpisodeID SmokingStatus SourceImageSequence SpecialNeeds StationName
    StudyComments StudyDescription StudyIDIssuer TextComments TextString TopicAuthor
    TopicKeywords TopicSubject TopicTitle VerifyingObserverIdentificationCodeSequence
    VerifyingObserverName VerifyingObserverSequence VerifyingOrganization VisitComments
    """.split()
)
_REMOVED_GROUPS = (0x5000, 0x6000)  # curves (50xx) and overlays (60xx, may hold text)


@dataclass(frozen=True)
class Deidentified:
    data: bytes
    burned_in_annotation: str | None  # as sent: "YES" means text may remain in the pixels


def hashed_uid(uid: str, salt: bytes) -> str:
    """A consistent replacement UID: ``2.25.`` + 128 bits of SHA-256(salt, uid) as an integer."""
    digest = hashlib.sha256(salt + b"\0" + uid.encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _replace_uid(uid: str, salt: bytes) -> str:
    return uid if uid.startswith(_DICOM_ROOT) else hashed_uid(uid, salt)


def _clean(salt: bytes) -> Callable[[Dataset, DataElement], None]:
    def visit(ds: Dataset, elem: DataElement) -> None:
        if elem.tag.is_private or (elem.tag.group & 0xFF00) in _REMOVED_GROUPS:
            del ds[elem.tag]
        elif elem.keyword in REMOVE:
            del ds[elem.tag]
        elif elem.keyword in ZERO:
            elem.value = Sequence() if elem.VR == "SQ" else ""
        elif elem.VR == "UI" and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            new = [
                v if str(v).startswith(_DICOM_ROOT) else hashed_uid(str(v), salt) for v in values
            ]
            elem.value = new if elem.VM > 1 else new[0]

    return visit


def deidentify(data: bytes, *, uid_salt: bytes = b"") -> Deidentified:
    """Apply the basic profile to a DICOM file; pixel data and transfer syntax unchanged.

    Args:
        data: a DICOM file (Part 10, or a bare dataset already accepted by the probe).
        uid_salt: secret mixed into replacement UIDs so originals cannot be guessed back.

    Returns:
        The de-identified file and the BurnedInAnnotation value it carried.
    """
    ds = pydicom.dcmread(BytesIO(data), force=True)
    burned_in = ds.get("BurnedInAnnotation")
    ds.walk(_clean(uid_salt))
    meta = ds.file_meta
    if "MediaStorageSOPInstanceUID" in meta and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    out = BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return Deidentified(out.getvalue(), str(burned_in) if burned_in else None)
