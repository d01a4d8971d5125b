"""What each supported data set is: label names and the text a model card inherits from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.schemas.models import DataProvenance


@dataclass(frozen=True)
class DataCard:
    slug: str  # model-name prefix, e.g. "pneumonia" -> "pneumonia-resnet18"
    labels: tuple[str, ...]
    positive_label: str | None
    description: str
    intended_use: str
    limitations: str
    provenance: DataProvenance
    # Published results on the same test split, for the comparison table in the card.
    baselines: list[dict[str, Any]] = field(default_factory=list)


_MEDMNIST_V2 = "Yang et al., MedMNIST v2, Scientific Data 10:41 (2023), Table 3"

PNEUMONIAMNIST = DataCard(
    slug="pneumonia",
    labels=("normal", "pneumonia"),
    positive_label="pneumonia",
    description=(
        "Binary classifier for paediatric chest X-rays (frontal view): outputs the probability "
        "of pneumonia versus normal. Trained from scratch by this project's trainer "
        "(`python -m trainer`) on PneumoniaMNIST, 28x28 grayscale images upsampled to the "
        "network input size."
    ),
    intended_use=(
        "Research and demonstration only: paediatric frontal chest X-rays (children aged "
        "1-5 years in the source data). Not a medical device; not for clinical use or "
        "diagnosis."
    ),
    limitations=(
        "Trained at 28x28 px resolution: any input is centre-cropped and reduced to 28 px "
        "first, so fine detail is discarded. Paediatric population from a single centre "
        "(Guangzhou Women and Children's Medical Center); behaviour on adults, other sites, "
        "scanners or lateral views is unknown. Source labels are noisy (bacterial and viral "
        "pneumonia merged; known duplicate images). Test prevalence (62.5% pneumonia) differs "
        "from training (74%), so accuracy at a fixed threshold shifts with prevalence. "
        "Probabilities are not calibrated for any clinical population."
    ),
    provenance=DataProvenance(
        source=(
            "PneumoniaMNIST (MedMNIST v2), 28x28 uint8. Reconstructed official split from two "
            "public copies: github.com/varun19424/pneumonia_mnist @ 9361a718d67e8a40f1ef8929db8c"
            "5682add8bd70 data/pneumoniamnist.npz and github.com/aksufatih/snn-medmnist @ "
            "5df79ab2ac7bf898a8c7bf39830053619defa2f7 pneumoniamnist.npz; underlying images "
            "from Kermany et al. 2018."
        ),
        licence="CC BY 4.0",
        citation=(
            "Yang, J. et al. MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D "
            "biomedical image classification. Scientific Data 10, 41 (2023). "
            "Kermany, D. S. et al. Identifying Medical Diagnoses and Treatable Diseases by "
            "Image-Based Deep Learning. Cell 172(5), 1122-1131 (2018)."
        ),
        split=(
            "official MedMNIST split sizes, reconstructed: train 4,708 (1,214 normal / 3,494 "
            "pneumonia), val 524 (135 / 389), test 624 (234 / 390)"
        ),
    ),
    baselines=[
        {"method": "ResNet-18 (28)", "auroc": 0.944, "accuracy": 0.854, "source": _MEDMNIST_V2},
        {"method": "ResNet-18 (224)", "auroc": 0.956, "accuracy": 0.864, "source": _MEDMNIST_V2},
        {"method": "ResNet-50 (28)", "auroc": 0.948, "accuracy": 0.854, "source": _MEDMNIST_V2},
        {"method": "ResNet-50 (224)", "auroc": 0.962, "accuracy": 0.884, "source": _MEDMNIST_V2},
        {"method": "auto-sklearn", "auroc": 0.942, "accuracy": 0.855, "source": _MEDMNIST_V2},
        {"method": "AutoKeras", "auroc": 0.947, "accuracy": 0.878, "source": _MEDMNIST_V2},
        {
            "method": "Google AutoML Vision",
            "auroc": 0.991,
            "accuracy": 0.946,
            "source": _MEDMNIST_V2,
        },
    ],
)

DATACARDS: dict[str, DataCard] = {"pneumoniamnist": PNEUMONIAMNIST}
