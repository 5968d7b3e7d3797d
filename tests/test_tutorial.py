"""docs/tutorial.ipynb: committed with the outputs of a run, and still running top to bottom."""

import os
from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "tutorial.ipynb"
FIGURES = 7  # curves, reconstructions, latent map, samples, manifold, CVAE latent map, digits


def _outputs(nb, kind):
  return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
          if o.output_type == kind]


def test_the_committed_notebook_holds_the_outputs_of_a_full_run():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code and all(c.outputs for c in code)  # every code cell prints or draws
  assert [c.execution_count for c in code] == list(range(1, len(code) + 1))  # in order, once
  assert not _outputs(nb, "error")
  text = "".join(o.text for o in _outputs(nb, "stream") if o.name == "stdout")
  assert "data: all of MNIST" in text and "epochs: 10" in text
  assert sum("image/png" in o.data for o in _outputs(nb, "display_data")) == FIGURES


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_on_a_slice(tmp_path, monkeypatch):
  # VAE_JAX_TUTORIAL_QUICK=1: 2,000 training and 500 test images, 2 epochs (about 45 s on
  # 2 CPU cores). Any cell that raises fails the test with the cell and its traceback.
  monkeypatch.setenv("VAE_JAX_TUTORIAL_QUICK", "1")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  text = "".join(o.text for o in _outputs(nb, "stream") if o.name == "stdout")
  assert "epochs: 2" in text and "'train_limit': 2000" in text
  assert "dz/dmu     = 1.000000" in text
  assert sum("image/png" in o.data for o in _outputs(nb, "display_data")) == FIGURES
  assert not os.listdir(tmp_path)  # the figures go to a temporary folder, not beside it
