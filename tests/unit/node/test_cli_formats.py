"""The CLI lists import formats without importing the importers (start-up cost)."""

from __future__ import annotations


def test_the_cli_offers_the_formats_the_importers_know() -> None:
    from node.cli_vault import FORMATS as CLI_FORMATS
    from protocols.importers import FORMATS

    assert CLI_FORMATS == FORMATS
