from pathlib import Path

from kandinsky_serve.settings_doc import render

DOCS = Path(__file__).parent.parent / "docs"


def test_configuration_reference_matches_the_settings():
    committed = (DOCS / "configuration.md").read_text()
    assert committed == render(), "regenerate it: python -m kandinsky_serve.settings_doc > docs/configuration.md"
