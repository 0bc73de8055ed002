"""The layers of docs/ARCHITECTURE.md, enforced: import-linter's contracts (pyproject.toml) hold on the package,
and a contract really fails when a lower part imports a higher one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
lint_imports = shutil.which("lint-imports")


def run_lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [lint_imports, "--no-cache"], cwd=cwd, capture_output=True, text=True, env={"PYTHONPATH": str(cwd)}
    )


@pytest.mark.skipif(lint_imports is None, reason="import-linter is not installed (the test extra installs it)")
def test_the_import_contracts_hold():
    done = run_lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" KEPT") == 3, done.stdout


@pytest.mark.skipif(lint_imports is None, reason="import-linter is not installed (the test extra installs it)")
def test_an_operator_importing_the_walk_breaks_a_contract(tmp_path):
    """A copy of the package's Python sources where the reference backend imports the walk: lint-imports fails
    and names the import."""
    shutil.copytree(ROOT / "lst_fast", tmp_path / "lst_fast", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    reference = tmp_path / "lst_fast" / "backends" / "reference.py"
    reference.write_text(reference.read_text() + "\nfrom lst_fast.walk import settings  # noqa: E402\n")
    done = run_lint_imports(tmp_path)
    assert done.returncode != 0 and "lst_fast.backends.reference -> lst_fast.walk.settings" in done.stdout, done.stdout
