"""One Observation per finding, from an image's JSON result (the contract in shared.schemas).

Following HL7's DICOM SR to FHIR mapping where R4 allows: a TID 1500 qualitative evaluation
becomes an Observation with valueCodeableConcept, a measurement one with valueQuantity, the
algorithm a Device (`Observation.device`) and the source study `derivedFrom` an ImagingStudy.
Numbers are copied from the JSON result unchanged, so both views of a job always agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from shared.fhir_results import codes as c
from shared.fhir_results.facts import ImageFacts, JobFacts

Finding = dict[str, Any]  # an Observation without id, references, status or timing
_CODE = re.compile(r"[^\s]+(\s[^\s]+)*")


def findings(facts: JobFacts, image: ImageFacts) -> Iterator[Finding]:
    """The findings of one succeeded image, per the model's task."""
    out = image.output or {}
    if "segmentation" in out:
        yield from _segmentation(facts, image, out["segmentation"])
    elif "detections" in out:
        yield from _detections(facts, image, out["detections"])
    elif "probabilities" in out:
        yield _classification(facts, image, out)


def _label(facts: JobFacts, label: str) -> dict[str, Any]:
    # FHIR's `code` type: no leading/trailing or repeated whitespace; other labels stay text.
    if _CODE.fullmatch(label):
        return c.concept(c.coding(c.label_system(facts.model_name), label, label), text=label)
    return c.concept(text=label)


def _component(code: dict[str, Any], text: str, **value: Any) -> dict[str, Any]:
    return {"code": c.concept(code, text=text), **value}


def _image_components(image: ImageFacts) -> list[dict[str, Any]]:
    parts = [_component(c.IMAGE_INDEX, "Image index", valueInteger=image.index)]
    if image.dicom and image.dicom.sop_instance:
        parts.append(
            _component(c.SOP_INSTANCE_UID, "SOP Instance UID", valueString=image.dicom.sop_instance)
        )
    return parts


def _classification(facts: JobFacts, image: ImageFacts, out: dict[str, Any]) -> Finding:
    label = str(out["label"])
    probabilities: dict[str, float] = out["probabilities"]
    point = out.get("operating_point")
    parts = [
        _component(
            c.PROBABILITY,
            f"Probability of {name}",
            valueQuantity=c.quantity(float(p), "1"),
        )
        for name, p in probabilities.items()
    ]
    finding: Finding = {
        "code": c.concept(c.CLASSIFICATION, c.FINDING, text=f"{facts.model_name} classification"),
        "valueCodeableConcept": _label(facts, label),
    }
    method = "most probable label"
    if point is not None and facts.positive_label is not None:
        threshold = float(point["threshold"])
        positive = label == facts.positive_label
        finding["interpretation"] = [c.POSITIVE if positive else c.NEGATIVE]
        parts.append(
            _component(c.THRESHOLD, "Decision threshold", valueQuantity=c.quantity(threshold, "1"))
        )
        method = (
            f"{facts.positive_label} when its probability >= {threshold:g} "
            f"(operating point from {point.get('source', 'the model card')}"
            + (
                f", sensitivity {point['sensitivity']:g}"
                if point.get("sensitivity") is not None
                else ""
            )
            + (
                f", specificity {point['specificity']:g}"
                if point.get("specificity") is not None
                else ""
            )
            + ")"
        )
    finding["method"] = c.concept(text=f"{facts.model_ref}: {method}")
    finding["component"] = parts + _image_components(image)
    return finding


def _detections(
    facts: JobFacts, image: ImageFacts, detections: list[dict[str, Any]]
) -> Iterator[Finding]:
    for rank, det in enumerate(detections):
        x1, y1, x2, y2 = (float(v) for v in det["box"])
        parts = [
            _component(
                c.SCORE, "Detection score", valueQuantity=c.quantity(float(det["score"]), "1")
            ),
            *(
                _component(code, code["display"], valueQuantity=c.quantity(v, "{pixel}"))
                for code, v in zip(c.BOX.values(), (x1, y1, x2, y2), strict=True)
            ),
        ]
        if det.get("size_mm"):
            w_mm, h_mm = (float(v) for v in det["size_mm"])
            parts.append(_component(c.WIDTH, "Box width", valueQuantity=c.quantity(w_mm, "mm")))
            parts.append(_component(c.HEIGHT, "Box height", valueQuantity=c.quantity(h_mm, "mm")))
        label = str(det["label"])
        yield {
            "code": c.concept(c.DETECTION, c.FINDING, text=f"{facts.model_name} detection"),
            "valueCodeableConcept": _label(facts, label),
            "method": c.concept(
                text=f"{facts.model_ref}: box {rank + 1} of {len(detections)}, "
                f"pixel coordinates of the image as uploaded ([x1, y1, x2, y2])"
            ),
            "component": parts + _image_components(image),
        }


def _segmentation(facts: JobFacts, image: ImageFacts, seg: dict[str, Any]) -> Iterator[Finding]:
    for cls in seg.get("classes", []):
        label = str(cls["label"])
        area_px = int(cls["area_px"])
        area_mm2 = cls.get("area_mm2")
        value = (
            c.quantity(float(area_mm2), "mm2")
            if area_mm2 is not None
            else c.quantity(area_px, "{pixel}")
        )
        parts = [
            _component(c.AREA, "Area in pixels", valueQuantity=c.quantity(area_px, "{pixel}")),
            _component(
                c.AREA_FRACTION,
                "Fraction of the image",
                valueQuantity=c.quantity(float(cls["fraction"]), "1"),
            ),
            _component(c.COMPONENTS, "Connected regions", valueInteger=int(cls["components"])),
            _component(c.LABEL, "Segmented class", valueCodeableConcept=_label(facts, label)),
        ]
        yield {
            "code": c.concept(c.SEGMENTATION, c.AREA, text=f"Area of {label} ({facts.model_name})"),
            "valueQuantity": value,
            "method": c.concept(text=f"{facts.model_ref}: segmentation mask area"),
            "component": parts + _image_components(image),
        }
