"""``relaxed-e3nn demo --quick``: it runs, reports the learned symmetry and writes what it says."""
import json

import pytest

from relaxed_e3nn.cli import main


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    capture = pytest.MonkeyPatch()
    import io
    import sys

    buffer = io.StringIO()
    capture.setattr(sys, "stdout", buffer)
    try:
        code = main(["demo", "--quick", "--out", str(out), "--no-progress"])
    finally:
        capture.undo()
    return code, buffer.getvalue(), out


@pytest.mark.slow
def test_demo_quick_reports_c4v(quick_demo):
    code, text, out = quick_demo
    assert code == 0
    assert "strict" in text and "relaxed" in text
    assert "input Oh; learned residual group C4v" in text and "[0 0 1]" in text
    assert "breaking carried by 1o" in text
    lines = [line.split() for line in text.splitlines()]
    strict_rmse, relaxed_rmse = [float(x) for x in next(w[1:] for w in lines if w[:1] == ["RMSE"] and len(w) == 3)]
    assert strict_rmse > 0 and relaxed_rmse > 0
    strict_relative = next(w for w in lines if w[:4] == ["RMSE", "/", "target", "RMS"])[4]
    assert float(strict_relative) == pytest.approx(1.0, abs=1e-3)  # the strict model predicts zero


@pytest.mark.slow
def test_demo_writes_what_it_announces(quick_demo):
    import torch

    import relaxed_e3nn
    from relaxed_e3nn.symmetry import residual_group

    code, text, out = quick_demo
    for name in ("report.txt", "report.json", "spectrum.png", "signal.png", "data/train.xyz", "data/test.xyz",
                 "strict/model.pt", "relaxed/model.pt"):
        assert (out / name).is_file(), name
    assert str(out) in text
    report = json.loads((out / "report.json").read_text())
    assert "C4v" in json.dumps(report)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = relaxed_e3nn.load(out / "relaxed" / "model.pt")
        assert residual_group(model, within="Oh").schoenflies == "C4v"
    finally:
        torch.set_default_dtype(previous)
    assert not list(out.rglob("*.tmp"))  # every file written atomically, no leftovers


@pytest.mark.slow
def test_demo_reruns_in_the_same_directory(quick_demo, capsys):
    code, _, out = quick_demo
    assert main(["demo", "--quick", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    assert "replacing the previous demo run" in capsys.readouterr().out


def test_demo_rejects_bad_epochs(tmp_path, capsys):
    assert main(["demo", "--quick", "--epochs", "0", "--out", str(tmp_path / "x")]) == 1
    assert "--epochs" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
