"""De-identification of DICOM uploads: PS3.15 Annex E Basic Application Level Confidentiality
Profile, driven by the standard's Table E.1-1 kept as data (``deid_table_e1_1.csv``).

Action codes of the table (PS3.15 E.1.1, Table E.1-1a):

- ``D``: replace with a dummy value of the same VR (a sequence keeps its items, every text,
  person-name and AE value inside becomes a dummy, dates go, UIDs are replaced).
- ``Z``: zero length (an empty sequence for SQ).
- ``X``: remove.
- ``K``: keep as sent (and exempt from the fallback below).
- ``C``: clean: keep the value with every identifying string of this object removed from it.
- ``U``: replace the UID by ``2.25.<UUID>``, the UUID an HMAC-SHA256 of the UID keyed by the
  de-identification secret: consistent (a study keeps one Study Instance UID across uploads,
  so series and studies still group) and not reversible without the secret.

Compound codes are resolved to their least retaining option, since the images this platform
runs models on (CT, MR, CR/DX, US, SC...) carry these attributes as Type 3: ``X/Z``, ``X/D``,
``X/Z/D`` -> X, ``Z/D`` -> Z. ``X/Z/U*`` (Referenced/Source Image Sequence) keeps the
references with their UIDs replaced, so derived objects still point at their sources.

Beyond the table: every remaining PN, DA, DT or TM element not marked K is removed, at any
depth of nesting, and so is any element of unknown VR (UN: its content cannot be judged);
any other UID outside the DICOM root that names an instance is replaced; private tags,
curves and overlays go; file meta is rewritten (Media Storage SOP Instance UID follows the
new SOP Instance UID, our implementation UID and version name, no source/sending AE titles).
Pixel data is not touched: the stored file decodes to the same pixels. Burned-in text cannot
be removed from pixels here: BurnedInAnnotation is kept as sent and reported, and
`burned_in_policy` decides whether such an image is refused, flagged or simply stored.
PatientIdentityRemoved = YES and DeidentificationMethod(+CodeSequence, DCM 113100) are set.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from shared.errors import InvalidImage

METHOD = "PS3.15 E.1 Basic Application Level Confidentiality Profile"  # LO: <= 64
TABLE_PATH = Path(__file__).with_name("deid_table_e1_1.csv")
ACTIONS = frozenset({"D", "Z", "X", "K", "C", "U"})
# Least retaining option of each compound code (see the module docstring).
COMPOUND = {"X/Z": "X", "X/D": "X", "X/Z/D": "X", "Z/D": "Z", "X/Z/U*": "U*"}
BURNED_IN_POLICIES = ("refuse", "flag", "allow")
# Our implementation in the file meta (PS3.7 D.3.3.2): a fixed UUID-derived UID, and a name.
IMPLEMENTATION_CLASS_UID = f"2.25.{uuid.uuid5(uuid.NAMESPACE_URL, 'medimg:deid').int}"
IMPLEMENTATION_VERSION_NAME = "MEDIMG_DEID_1"  # SH: <= 16
_DICOM_ROOT = "1.2.840.10008."  # SOP classes, transfer syntaxes, coding schemes: not PHI
_FALLBACK_REMOVED_VRS = frozenset({"PN", "DA", "DT", "TM"})
_DUMMY_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC", "AE"})
_CLEANABLE_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})
# UIDs that name a kind of thing, not an instance: kept when not in the table.
_KEPT_UID_KEYWORDS = frozenset({"CodingSchemeUID", "MappingResourceUID"})
_KEPT_UID_SUFFIXES = ("ClassUID", "TransferSyntaxUID")
_META_REMOVED = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "SourcePresentationAddress",
    "SendingPresentationAddress",
    "ReceivingPresentationAddress",
    "PrivateInformationCreatorUID",
    "PrivateInformation",
)
_DUMMY = {
    "PN": "ANONYMOUS",
    "DA": "19000101",
    "TM": "000000.00",
    "DT": "19000101000000.000000",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
    "CS": "ANONYMIZED",
}


@dataclass(frozen=True)
class ActionTable:
    """Table E.1-1 as lookups: exact tags, wildcard masks and the private-tag rule."""

    exact: dict[int, str]
    masks: tuple[tuple[int, int, str], ...] = ()  # (mask, value, action), first match wins
    private: str | None = None

    def action_for(self, tag: BaseTag) -> str | None:
        if tag.is_private and self.private is not None:
            return self.private
        found = self.exact.get(int(tag))
        if found is not None:
            return found
        return next((a for mask, value, a in self.masks if int(tag) & mask == value), None)


def _parse_tag(text: str) -> tuple[int, int]:
    """``0008002A`` -> (0xFFFFFFFF, 0x0008002A); ``60XX4000`` -> (0xFF00FFFF, 0x60004000)."""
    if not re.fullmatch(r"[0-9A-Fa-fXx]{8}", text):
        raise ValueError(f"bad tag {text!r} in the de-identification table")
    mask = int("".join("0" if c in "xX" else "F" for c in text), 16)
    return mask, int("".join("0" if c in "xX" else c for c in text), 16)


def parse_table(lines: list[str]) -> ActionTable:
    """Build the lookups from the CSV text (``#`` lines are comments, then a header row)."""
    rows = csv.DictReader(line for line in lines if not line.startswith("#"))
    exact: dict[int, str] = {}
    masks: list[tuple[int, int, str]] = []
    private: str | None = None
    for row in rows:
        action = row["action"].strip()
        if action not in ACTIONS and action not in COMPOUND:
            raise ValueError(f"unknown action {action!r} for {row['tag']}")
        if row["source"] not in ("E.1-1", "medimg"):
            raise ValueError(f"unknown source {row['source']!r} for {row['tag']}")
        if row["tag"] == "PRIVATE":
            private = action
            continue
        mask, value = _parse_tag(row["tag"])
        if mask == 0xFFFFFFFF:
            exact[value] = action
        else:
            masks.append((mask, value, action))
    # Narrower wildcards first: 60XX4000 before 60XXXXXX.
    masks.sort(key=lambda m: -bin(m[0]).count("1"))
    return ActionTable(exact, tuple(masks), private)


@lru_cache(maxsize=1)
def default_table() -> ActionTable:
    """The committed Table E.1-1 (basic profile column) plus this platform's additions."""
    return parse_table(TABLE_PATH.read_text().splitlines())


@dataclass(frozen=True)
class Deidentified:
    data: bytes
    burned_in_annotation: str | None  # as sent: "YES" means text may remain in the pixels

    @property
    def burned_in(self) -> bool:
        return (self.burned_in_annotation or "").strip().upper() == "YES"


def hashed_uid(uid: str, salt: bytes) -> str:
    """A consistent replacement UID: ``2.25.`` + a UUID made of HMAC-SHA256(secret, uid).

    The 128 bits carry the RFC 9562 version 8 (custom) and variant bits, so the result is a
    valid UUID-derived UID (PS3.5 B.2) of at most 44 characters.
    """
    digest = hmac.new(salt, b"uid\0" + uid.encode(), hashlib.sha256).digest()
    value = int.from_bytes(digest[:16], "big")
    value = (value & ~(0xF << 76)) | (0x8 << 76)  # version 8
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC variant
    return f"2.25.{value}"


def _replace_uid(uid: str, salt: bytes) -> str:
    return uid if not uid or uid.startswith(_DICOM_ROOT) else hashed_uid(uid, salt)


def _kept_uid(keyword: str) -> bool:
    return keyword in _KEPT_UID_KEYWORDS or keyword.endswith(_KEPT_UID_SUFFIXES)


@dataclass
class _Context:
    table: ActionTable
    salt: bytes
    identifying: list[str] = field(default_factory=list)  # strings action C removes


def _values(elem: DataElement) -> list[object]:
    if elem.value is None or elem.value == "":
        return []
    return list(elem.value) if elem.VM > 1 else [elem.value]


def _set_values(elem: DataElement, values: Iterable[object]) -> None:
    values = list(values)
    elem.value = values if len(values) > 1 else (values[0] if values else "")


def _zero(elem: DataElement) -> None:
    if elem.VR == "SQ":
        elem.value = Sequence()
    elif elem.VR in _DUMMY_TEXT_VRS or elem.VR in _DUMMY or elem.VR in ("UI", "UR"):
        elem.value = ""
    else:
        elem.value = None


def _dummy(ds: Dataset, elem: DataElement, ctx: _Context) -> None:
    if elem.VR == "SQ":
        for item in elem.value:
            _clean(item, ctx, dummy=True)
    elif elem.VR == "UI":
        _set_values(elem, [_replace_uid(str(v), ctx.salt) for v in _values(elem)] or [""])
    elif elem.VR in _DUMMY:
        elem.value = _DUMMY[elem.VR]
    elif elem.VR in _DUMMY_TEXT_VRS:
        elem.value = "ANONYMIZED"
    elif elem.VR in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"):
        elem.value = 0
    else:  # OB, OW, UN, AT...: no meaningful dummy exists; keep nothing
        _zero(elem)


def _cleaned(elem: DataElement, ctx: _Context) -> bool:
    """Remove identifying strings from a text value; False when the VR cannot be cleaned."""
    if elem.VR not in _CLEANABLE_VRS:
        return False
    out: list[object] = []
    for value in _values(elem):
        text = str(value)
        for token in ctx.identifying:
            text = re.sub(re.escape(token), "", text, flags=re.IGNORECASE)
        out.append(text.strip(" ^"))
    _set_values(elem, out)
    return True


def _apply(ds: Dataset, elem: DataElement, action: str, ctx: _Context, dummy: bool) -> None:
    if action == "X":
        del ds[elem.tag]
    elif action == "Z":
        _zero(elem)
    elif action == "D":
        _dummy(ds, elem, ctx)
    elif action == "U":
        if elem.VR == "UI":
            _set_values(elem, [_replace_uid(str(v), ctx.salt) for v in _values(elem)])
        else:
            del ds[elem.tag]
    elif action == "C":
        if elem.VR == "SQ":
            for item in elem.value:
                _clean(item, ctx, dummy=dummy)
        elif not _cleaned(elem, ctx):
            del ds[elem.tag]
    elif elem.VR == "SQ":  # K and U*: keep, cleaning what the items hold
        for item in elem.value:
            _clean(item, ctx, dummy=dummy and action != "K")


def _fallback(ds: Dataset, elem: DataElement, ctx: _Context, dummy: bool) -> None:
    """Elements the table does not name."""
    if elem.tag.element == 0 or elem.tag.group in (0xFFFA, 0xFFFC):  # group lengths, padding
        del ds[elem.tag]
    elif elem.VR in _FALLBACK_REMOVED_VRS or elem.VR == "UN":  # UN: content unknowable
        del ds[elem.tag]
    elif elem.VR == "UI":
        if not _kept_uid(elem.keyword):
            _set_values(elem, [_replace_uid(str(v), ctx.salt) for v in _values(elem)])
    elif elem.VR == "SQ":
        for item in elem.value:
            _clean(item, ctx, dummy=dummy)
    elif dummy and elem.VR in _DUMMY_TEXT_VRS:
        elem.value = "ANONYMIZED"


def _clean(ds: Dataset, ctx: _Context, *, dummy: bool = False) -> None:
    for tag in list(ds.keys()):
        elem = ds[tag]
        action = ctx.table.action_for(elem.tag)
        if action is None:
            _fallback(ds, elem, ctx, dummy)
        else:
            _apply(ds, elem, COMPOUND.get(action, action), ctx, dummy)


def _identifying_strings(ds: Dataset, table: ActionTable) -> list[str]:
    """Values that action C must strip: whatever the table removes, empties or replaces."""
    found: set[str] = set()
    for elem in ds.iterall():
        action = table.action_for(elem.tag)
        if elem.VR not in _CLEANABLE_VRS or action in ("K", "C"):
            continue
        if action is None and elem.VR != "PN":  # the fallback removes only names of these
            continue
        for value in _values(elem):
            text = str(value)
            parts = text.split("^") if elem.VR == "PN" else [text]
            found.update(p.strip() for p in [text, *parts] if len(p.strip()) >= 3)
    return sorted(found, key=len, reverse=True)  # longest first: "Doe^Jane" before "Doe"


def _clean_file_meta(ds: Dataset) -> None:
    meta: FileMetaDataset | None = getattr(ds, "file_meta", None)
    if meta is None:
        return
    for keyword in _META_REMOVED:
        if keyword in meta:
            delattr(meta, keyword)
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if len(meta):
        meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME


def deidentify(
    data: bytes,
    *,
    uid_salt: bytes = b"",
    table: ActionTable | None = None,
    burned_in_policy: str = "allow",
) -> Deidentified:
    """Apply the basic profile to a DICOM file; pixel data and transfer syntax unchanged.

    Args:
        data: a DICOM file (Part 10, or a bare dataset already accepted by the probe).
        uid_salt: the de-identification secret keying replacement UIDs (an HMAC key).
        table: the action table; the committed Table E.1-1 by default.
        burned_in_policy: ``refuse`` raises InvalidImage (422) for BurnedInAnnotation YES;
            ``flag`` and ``allow`` store it (the caller records the flag).

    Returns:
        The de-identified file and the BurnedInAnnotation value it carried.
    """
    if burned_in_policy not in BURNED_IN_POLICIES:
        raise ValueError(f"burned_in_policy must be one of {BURNED_IN_POLICIES}")
    ds = pydicom.dcmread(BytesIO(data), force=True)
    burned_in = ds.get("BurnedInAnnotation")
    burned = str(burned_in) if burned_in else None
    if burned_in_policy == "refuse" and (burned or "").strip().upper() == "YES":
        raise InvalidImage(
            "the image declares BurnedInAnnotation = YES (text such as names may be burned "
            "into the pixels, which de-identification cannot remove); this platform is set to "
            "refuse such images"
        )
    rules = table or default_table()
    ctx = _Context(rules, uid_salt, _identifying_strings(ds, rules))
    _clean(ds, ctx)
    _clean_file_meta(ds)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    out = BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return Deidentified(out.getvalue(), burned)
