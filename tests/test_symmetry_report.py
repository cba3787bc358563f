"""Spectrum, significance, SymmetryReport and the analyze CLI."""
import dataclasses
import json

import pytest
import torch
from e3nn import o3

from relaxed_e3nn.groups import point_group
from relaxed_e3nn.nn import RelaxedWeights
from relaxed_e3nn.symmetry import (
    SymmetryReport,
    breaking_significance,
    breaking_spectrum,
    format_axis,
    plot_signal,
    plot_spectrum,
)

PNG = b"\x89PNG\r\n\x1a\n"


def two_layer_model(breaking=0.5, noise=1e-6, seed=0):
    """Two relaxed weights: layer a breaks O(3) to C4v about z (1o along z plus a cubic 4e part),
    layer b only holds noise."""
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.ModuleDict({"a": RelaxedWeights("0e+1o+2e+4e"), "b": RelaxedWeights("0e+1o+1e+2e")})
    with torch.no_grad():
        for w in model.values():
            w.theta.add_(noise * torch.randn(w.theta.shape, generator=g) * (~w.scalar_mask))
        model["a"].theta[1:4] += torch.tensor([0.0, 0.0, breaking])
        cubic = point_group("Oh").invariant_projector("4e", dtype=torch.float64) @ torch.randn(9, dtype=torch.float64, generator=g)
        model["a"].theta[9:] += (cubic / cubic.norm()).to(model["a"].theta.dtype)
    return model


def test_breaking_spectrum_norms(dtype):
    y2z = o3.spherical_harmonics(2, torch.tensor([0.0, 0.0, 1.0]), normalize=True)
    theta = torch.cat([torch.tensor([2.0, 0.0, 0.0, 3.0]), 4.0 * y2z / y2z.norm()])
    rows = breaking_spectrum(theta, "0e+1o+2e")
    assert [(r.irrep, r.multiplicity) for r in rows] == [("0e", 1), ("1o", 1), ("2e", 1)]
    assert rows[0].norm == pytest.approx(2.0) and rows[0].broken == 0.0
    assert rows[1].broken == pytest.approx(3.0) and rows[2].broken == pytest.approx(4.0)
    # beyond C_inf_v about z nothing is broken (1o along z, 2e proportional to Y2(z))
    assert rows[1].fraction == pytest.approx(1.0)
    rows_h = breaking_spectrum(theta, "0e+1o+2e", group="Cinfv")
    assert max(r.broken for r in rows_h) < 1e-6
    # ... but beyond C_inf_v about x, the z vector is fully broken (negative check)
    rows_x = breaking_spectrum(theta, "0e+1o+2e", group=point_group("Cinfv", frame=[[0, 0, 1], [0, 1, 0], [-1, 0, 0]]))
    assert rows_x[1].broken == pytest.approx(3.0, rel=1e-5)


def test_significance_separates_breaking_from_noise():
    model = two_layer_model()
    control = two_layer_model(breaking=0.0, noise=1e-6, seed=1)
    with torch.no_grad():
        control["a"].theta[9:] = 0.0
    for symmetric in (control, 1e-6, None):
        rows = breaking_significance(model, symmetric_control=symmetric)
        sig = {(r.layer, r.irrep): r.significant for r in rows}
        assert sig[("a", "1o")] and sig[("a", "4e")], symmetric
        assert not any(v for (layer, _), v in sig.items() if layer == "b"), symmetric
    # breaking measured beyond C4v: the 1o and the cubic 4e are invariant, nothing is significant
    rows = breaking_significance(model, symmetric_control=1e-6, group="C4v")
    assert not any(r.significant for r in rows)
    boot = breaking_significance(model, symmetric_control=control, method="bootstrap", n_boot=5000)
    assert {(r.layer, r.irrep) for r in boot if r.significant} == {("a", "1o"), ("a", "4e")}
    with pytest.raises(ValueError, match="same relaxed weights"):
        breaking_significance(model, symmetric_control=torch.nn.ModuleDict({"a": RelaxedWeights("0e+1o")}))
    with pytest.raises(ValueError, match="method"):
        breaking_significance(model, method="magic")


def test_strict_control_is_a_deprecated_alias_of_symmetric_control():
    model = two_layer_model()
    with pytest.warns(DeprecationWarning, match="symmetric_control"):
        old = breaking_significance(model, strict_control=1e-6)
    assert old == breaking_significance(model, symmetric_control=1e-6)
    with pytest.raises(TypeError, match="symmetric_control only"):
        breaking_significance(model, symmetric_control=1e-6, strict_control=1e-6)
    with pytest.warns(DeprecationWarning, match="SymmetryReport"):
        report = SymmetryReport(model, strict_control=1e-6)
    assert report.significance == SymmetryReport(model, symmetric_control=1e-6).significance


def test_format_axis():
    assert format_axis([0, 0, 2.0]) == "[0 0 1]"
    assert format_axis([-1.0, -1.0, -1.0]) == "[1 1 1]"
    assert format_axis([1.0, 1.0 + 1e-5, 0.0]) == "[1 1 0]"
    assert format_axis([0.3, 0.5, 0.81]).startswith("[0.")


def test_symmetry_report_text_json_plots(tmp_path):
    model = two_layer_model()
    report = SymmetryReport(model, within="Oh", tol=1e-3)
    assert report.residual.group.schoenflies == "C4v"
    assert "input Oh; learned residual group C4v about [0 0 1]" in report.summary()
    assert "1o (significant)" in report.summary()
    text = report.text()
    assert "Oh -> C4v" in text and "per layer" in text
    data = json.loads(report.to_json(tmp_path / "r.json"))
    assert data["residual_group"]["schoenflies"] == "C4v"
    assert json.loads((tmp_path / "r.json").read_text())["chain"] == "Oh -> C4v"
    paths = report.save_plots(tmp_path / "plots" / "m_")
    for p in paths:
        assert open(p, "rb").read(8) == PNG
    # no stray temporary files
    assert sorted(x.name for x in (tmp_path / "plots").iterdir()) == ["m_signal.png", "m_spectrum.png"]


def test_plot_errors_leave_no_file(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        plot_spectrum([], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    plot_signal(torch.tensor([1.0, 0.0, 0.0, 1.0]), tmp_path / "s.png", irreps="0e+1o", group=point_group("C4v"))
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG


def small_network():
    from relaxed_e3nn.models import RelaxedNetwork, RelaxedNetworkConfig

    config = RelaxedNetworkConfig(species=[29], cutoff=3.0, num_layers=1, irreps_hidden="4x0e+2x1o+2x1e",
                                  lmax=2, num_radial_basis=4, radial_neurons=8, irreps_relaxed=2)
    return RelaxedNetwork(config)


@pytest.mark.slow
def test_analyze_cli(tmp_path, capsys):
    import ase.build
    import ase.io

    import relaxed_e3nn
    from relaxed_e3nn.cli import main
    from relaxed_e3nn.nn import relaxed_parameters

    model = small_network()
    with torch.no_grad():
        for _, irreps, theta in relaxed_parameters(model):
            sl = irreps.slices()[[str(ir) for _, ir in irreps].index("1o")]
            theta[sl] = torch.tensor([0.0, 0.0, 0.4], dtype=theta.dtype)
    path = tmp_path / "model.pt"
    relaxed_e3nn.save(model, path)
    crystal = tmp_path / "cu.cif"
    ase.io.write(crystal, ase.build.bulk("Cu", "fcc", a=3.6, cubic=True))
    for within in ("Oh", str(crystal)):
        rc = main(["analyze", str(path), "--within", within, "--json", str(tmp_path / "a.json"),
                   "--plot", str(tmp_path / "a.png")])
        assert rc == 0
        out = capsys.readouterr().out
        assert "learned residual group C4v" in out
        assert json.loads((tmp_path / "a.json").read_text())["residual_group"]["schoenflies"] == "C4v"
        assert (tmp_path / "a.png").read_bytes()[:8] == PNG
        assert (tmp_path / "a_signal.png").read_bytes()[:8] == PNG
    assert main(["analyze", str(path)]) == 0
    assert "Cinfv" in capsys.readouterr().out
    assert main(["analyze", str(path), "--within", "Q9"]) == 1
    assert "neither a point group name" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "missing.pt")]) == 1
    assert main(["analyze", str(path), "--plot", str(tmp_path / "x.pdf"), "--json", str(tmp_path / "x.json")]) == 1
    assert "--plot must name a .png" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    # a strict model has nothing to analyse: a clear error, no output files
    from relaxed_e3nn.models import RelaxedNetwork

    strict = RelaxedNetwork(dataclasses.replace(model.config, relaxed=False))
    relaxed_e3nn.save(strict, tmp_path / "strict.pt")
    capsys.readouterr()
    assert main(["analyze", str(tmp_path / "strict.pt"), "--json", str(tmp_path / "s.json")]) == 1
    assert "RelaxedWeights" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()
