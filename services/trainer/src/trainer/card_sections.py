"""The parts every task's model_card.md shares: the head (title, facts table, intended use,
limitations) and the tail (data, training, files). Each task renders only its results."""

from __future__ import annotations

from shared.schemas.models import ModelCard
from trainer.card import provenance_lines


def labels_cell(labels: list[str]) -> str:
    return ", ".join(f"`{x}`" for x in labels)


def card_head(card: ModelCard, *, generator: str, rows: list[str]) -> list[str]:
    """Title, the generated-by note, description, facts table and use/limitation sections.

    Args:
        generator: the module that renders this card (named in the do-not-edit note).
        rows: the task's table rows after Task (architecture, labels, input...); the queue
            row is added last.
    """
    return [
        f"# {card.name}",
        "",
        f"<!-- Generated from card.json by {generator}; do not edit by hand. -->",
        "",
        card.description,
        "",
        "| | |",
        "|---|---|",
        f"| Task | {card.task} |",
        *rows,
        f"| Queue | {card.queue} |",
        "",
        "## Intended use",
        "",
        card.intended_use,
        "",
        "## Limitations",
        "",
        card.limitations,
        "",
    ]


def card_tail(card: ModelCard, *, how_to_load: str) -> list[str]:
    """Data and training provenance, then the files of the model package."""
    return [
        *provenance_lines(card),
        "## Files",
        "",
        "- `card.json`: this card, machine-readable (`shared.schemas.models.ModelCard`).",
        f"- `weights.pt`: `state_dict` in float16; {how_to_load}.",
        "",
    ]


def join_lines(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"
