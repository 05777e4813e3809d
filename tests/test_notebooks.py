"""Every notebook in notebooks/ executes top to bottom (at reduced size)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFPHYS_NB_STEPS", "200")
    monkeypatch.setenv("DIFFPHYS_NB_SMALL", "1")  # coarser grids, fewer iterations
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert any(o.output_type == "display_data" for c in notebook.cells for o in c.get("outputs", []))


def test_there_are_notebooks():
    assert NOTEBOOKS
