"""docs/tutorial.ipynb: committed with the outputs of a run, and still running top to bottom."""

import json
import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "tutorial.ipynb"
FIGURES = 7  # curves, reconstructions, latent map, samples, manifold, CVAE latent map, digits


def _outputs(nb: dict, kind: str) -> list[dict]:
  """The outputs of type `kind` of every code cell of a notebook read as JSON (nbformat 4)."""
  return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]
          if o["output_type"] == kind]


def _stdout(nb: dict) -> str:
  return "".join("".join(o["text"]) for o in _outputs(nb, "stream") if o["name"] == "stdout")


def _figures(nb: dict) -> int:
  return sum("image/png" in o["data"] for o in _outputs(nb, "display_data"))


def test_the_committed_notebook_holds_the_outputs_of_a_full_run():
  nb = json.loads(NOTEBOOK.read_text())
  code = [c for c in nb["cells"] if c["cell_type"] == "code"]
  assert code and all(c["outputs"] for c in code)  # every code cell prints or draws
  assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))  # in order
  assert not _outputs(nb, "error")
  assert "data: all of MNIST" in _stdout(nb) and "epochs: 10" in _stdout(nb)
  assert _figures(nb) == FIGURES


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_on_a_slice(tmp_path, monkeypatch):
  # VAE_JAX_TUTORIAL_QUICK=1: 2,000 training and 500 test images, 2 epochs (about 45 s on
  # 2 CPU cores). Any cell that raises fails the test with the cell and its traceback.
  nbclient = pytest.importorskip("nbclient")  # the dev extra installs it
  nbformat = pytest.importorskip("nbformat")
  monkeypatch.setenv("VAE_JAX_TUTORIAL_QUICK", "1")
  monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # the kernel's temporary figures
  (tmp_path / "tmp").mkdir()
  (tmp_path / "cwd").mkdir()
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path / "cwd")}}).execute()
  nb = json.loads(nbformat.writes(nb))
  assert "epochs: 2" in _stdout(nb) and "'train_limit': 2000" in _stdout(nb)
  assert "dz/dmu     = 1.000000" in _stdout(nb)
  assert _figures(nb) == FIGURES
  assert not os.listdir(tmp_path / "cwd")  # nothing written beside the notebook
