"""The numbers the pages hand to site.js, as standard JSON: a NaN (a walk whose model gave no number) is
written as null, which site.js shows as "n/a" and sorts last. Python's json would write the token NaN,
which JSON.parse refuses and which site.js's number formatting does not expect."""

from __future__ import annotations

from typing import Any

from lst_fast.atomic_files import standard_json


def data_script(name: str, value: Any) -> str:
    """A <script> file's text, `window.NAME = VALUE;` (file:// pages may load scripts, not fetch JSON)."""
    return f"window.{name} = {standard_json(value, compact=True)};\n"
