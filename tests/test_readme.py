"""The README's configuration table lists exactly the settings the code has."""

from __future__ import annotations

import re

from rag.settings import Settings
from tests.conftest import REPO


def test_readme_configuration_table_matches_settings() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `TGRAG_([A-Z0-9_]+)` \|", table, flags=re.M))
    fields = {name.upper() for name in Settings.model_fields}
    assert documented == fields, (
        f"missing from README: {sorted(fields - documented)}; "
        f"not in Settings: {sorted(documented - fields)}"
    )


def test_readme_opens_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [
        ["make", "demo"], ["make", "test"],
    ]
