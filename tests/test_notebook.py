"""The tutorial notebook (examples/tutorial.ipynb): committed without outputs, and it runs end to end.

The run executes every cell with nbclient on the short configuration (``MNIST_CNN_TUTORIAL_QUICK=1``)
against the real data, then reads the outputs of the cells that matter: the figures, the accuracy
numbers, the significance test and the photo's answer. The notebook must write its runs into a
temporary folder, never into the repository.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NOTEBOOK = EXAMPLES / "tutorial.ipynb"

# cell metadata that Jupyter and nbclient write on execution (timings, view state): noise in a diff
VOLATILE_CELL_METADATA = {"execution", "ExecuteTime", "collapsed", "scrolled"}
# what .pre-commit-config.yaml's hook runs; --keep-id: the run test below finds cells by their ids
STRIP = "nbstripout --keep-id --extra-keys metadata.language_info"
# the cells the run test reads
CELLS = ("imports", "load-data", "distribution", "sample", "models", "test-metrics", "curves", "report", "compare")
CELLS += ("photo", "preprocess", "predict", "default")


def unstripped(nb: dict[str, Any]) -> list[str]:
    """What keeps a notebook (as parsed JSON) from being commit-ready: outputs, execution counts,
    execution metadata, widget state, the interpreter's version. Empty when it is clean."""
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        where = f"cell {i} ({cell.get('id', 'no id')})"
        if cell.get("outputs"):
            problems.append(f"{where}: has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"{where}: execution_count is {cell['execution_count']}, not null")
        noisy = VOLATILE_CELL_METADATA & set(cell.get("metadata", {}))
        if noisy:
            problems.append(f"{where}: metadata {sorted(noisy)}")
    for key in ("widgets", "language_info"):  # language_info: the version of whoever ran it last
        if key in nb.get("metadata", {}):
            problems.append(f"notebook metadata: {key}")
    return problems


def test_committed_notebooks_are_stripped() -> None:
    notebooks = sorted(EXAMPLES.glob("*.ipynb"))
    assert NOTEBOOK in notebooks
    for path in notebooks:
        problems = unstripped(json.loads(path.read_text(encoding="utf-8")))
        assert not problems, f"{path.name}: {'; '.join(problems)}; strip it: `{STRIP} {path}`"


def test_unstripped_finds_outputs_and_counts() -> None:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
    code["execution_count"] = 3
    code["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    nb["metadata"]["widgets"] = {}
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    problems = unstripped(nb)
    assert len(problems) == 5, problems


def test_notebook_is_valid_and_has_a_parameters_cell() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "one cell tagged 'parameters' (papermill's convention) holds the settings"
    for name in ("QUICK", "EPOCHS", "TRAIN_SUBSET", "DATA_DIR", "RUNS_DIR"):
        assert re.search(rf"^{name} = ", tagged[0].source, re.M), f"parameter {name} missing"
    assert "MNIST_CNN_TUTORIAL_QUICK" in tagged[0].source
    missing = set(CELLS) - {c.get("id") for c in nb.cells}
    assert not missing, f"cells {sorted(missing)} lost their ids (strip with `{STRIP}`, which keeps them)"


# --------------------------------------------------------------------------- running it


def cell_text(cell: Any) -> str:
    """Everything a cell printed or returned as text."""
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.extend(str(out.data[k]) for k in ("text/markdown", "text/plain") if k in out.data)
    return "".join(parts)


def images(cell: Any) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.outputs)


def percent(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not found in:\n{text}"
    return float(m.group(1))


@pytest.mark.integration
@pytest.mark.slow
def test_tutorial_runs_on_the_short_configuration(
    real_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # the kernel inherits this environment: the data, the short configuration, and a temp folder
    # of the test's own for the runs (tempfile.mkdtemp in the notebook honours TMPDIR)
    monkeypatch.setenv("MNIST_CNN_DATA_DIR", str(real_data))
    monkeypatch.setenv("MNIST_CNN_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter"))
    before = sorted(p.name for p in EXAMPLES.iterdir())
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # a failing cell raises CellExecutionError with its traceback
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}).execute()
    cells = {c.id: c for c in nb.cells if c.cell_type == "code"}
    text = {cid: cell_text(c) for cid, c in cells.items()}

    runs = Path(re.search(r"runs and figures go to (\S+)", text["imports"]).group(1))
    assert runs.parent == tmp and (runs / "model1-seed0" / "model.safetensors").is_file()
    assert sorted(p.name for p in EXAMPLES.iterdir()) == before, "the notebook wrote into the repository"

    assert "train: (60000, 28, 28) uint8, test: (10000, 28, 28)" in text["load-data"]
    assert "chi2 =" in text["distribution"] and images(cells["distribution"]) == 1
    assert images(cells["sample"]) == 1
    assert "total parameters: 110,474" in text["models"] and "total parameters: 119,850" in text["models"]
    for model in ("model1", "model2"):  # the short run learns: far above the 10% of guessing
        assert percent(rf"{model}\s+0\s+(\d+\.\d+)%", text["test-metrics"]) > 50
    assert images(cells["curves"]) == 1
    assert text["report"].count("macro avg") == 2 and images(cells["report"]) == 2
    assert re.search(r"McNemar exact p = \S+", text["compare"])
    assert "model1" in text["compare"].splitlines()[-1], "the verdict sentence names the models"
    assert images(cells["photo"]) == 1 and images(cells["preprocess"]) == 1
    assert re.search(r"^default\s+says 7 ", text["predict"], re.M), text["predict"]
    assert percent(r"default model: test accuracy (\d+\.\d+)%", text["default"]) > 99
