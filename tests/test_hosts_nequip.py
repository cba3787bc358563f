"""relax() on NequIP models: identical outputs at θ = 0, joint equivariance, Stab(θ), training hooks, files.

Skipped when NequIP is not installed (``pip install relaxed_e3nn[nequip]``; CI installs it).
"""
import copy
import math

import pytest
import torch

pytest.importorskip("nequip", reason="NequIP is not installed: pip install relaxed_e3nn[nequip]")

from e3nn import get_optimization_defaults  # noqa: E402
from hydra.utils import get_class, instantiate  # noqa: E402  (NequIP depends on hydra)
from nequip.data import compute_neighborlist_, from_dict  # noqa: E402
from nequip.model import NequIPGNNModel  # noqa: E402
from nequip.nn.interaction_block import InteractionBlock  # noqa: E402
from nequip.utils.global_state import set_global_state  # noqa: E402

import relaxed_e3nn  # noqa: E402
from _geometry import INVERSION, reflection, rotation_about  # noqa: E402
from _hosts import (  # noqa: E402
    assert_jointly_equivariant, cluster, random_axis, set_polar_thetas_, set_random_thetas_, symmetry_error,
)
from _tolerance import tolerance  # noqa: E402
from relaxed_e3nn.nn import relax, relaxed_nequip_model, relaxed_parameters  # noqa: E402
from relaxed_e3nn.nn.hosts import RelaxedHostBlock, recipe_of  # noqa: E402
from relaxed_e3nn.nn.hosts._nequip import RelaxedNequIPInteraction  # noqa: E402
from relaxed_e3nn.nn.hosts._recipe import preserved_global_state  # noqa: E402
from relaxed_e3nn.symmetry import project_thetas  # noqa: E402

R_MAX = 4.0
TYPES = torch.tensor([0, 1, 0, 0, 1, 0, 1, 0])


def config(dtype=torch.float64) -> dict:
    return dict(_target_="nequip.model.NequIPGNNModel", seed=0, model_dtype=str(dtype).split(".")[-1],
                type_names=["Cu", "Au"], r_max=R_MAX, num_layers=2, l_max=2, parity=True, num_features=4,
                radial_mlp_depth=1, radial_mlp_width=8, avg_num_neighbors=6.0, per_type_energy_scales=1.0,
                per_type_energy_shifts=0.0)


def plain_model(dtype) -> torch.nn.Module:
    kwargs = {k: v for k, v in config(dtype).items() if k != "_target_"}
    with preserved_global_state():
        set_global_state()  # NequIP's builders need it; it seeds and sets the default dtype, undone on exit
        return NequIPGNNModel(**kwargs)


def model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def energy_forces(model, pos):
    data = from_dict({"pos": pos.to(model_dtype(model)), "atom_types": TYPES[: len(pos)]})
    out = model(compute_neighborlist_(data, R_MAX))
    return out["total_energy"].reshape(-1), out["forces"]


def test_relax_finds_every_interaction_block_and_gives_each_its_own_theta():
    model = relax(plain_model(torch.float64), irreps_relaxed=2)
    blocks = [m for m in model.modules() if isinstance(m, RelaxedNequIPInteraction)]
    assert len(blocks) == 2
    thetas = list(relaxed_parameters(model))
    assert [name for name, _, _ in thetas] == [f"model.func.layer{i}_convnet.conv.theta" for i in range(2)]
    assert thetas[0][2] is not thetas[1][2]
    # relaxing again changes nothing
    assert len(list(relaxed_parameters(relax(model)))) == 2


@pytest.mark.parametrize("relax_at", ["edge", "node", "both"])
def test_identical_energy_and_forces_at_theta_zero(dtype, relax_at):
    plain = plain_model(dtype)
    relaxed = relax(copy.deepcopy(plain), irreps_relaxed=2, relax_at=relax_at)
    pos = cluster()
    energy, forces = energy_forces(plain, pos)
    energy_relaxed, forces_relaxed = energy_forces(relaxed, pos)
    assert model_dtype(relaxed) == dtype
    assert torch.equal(energy, energy_relaxed) and torch.equal(forces, forces_relaxed)


def test_shared_edge_attrs_are_restored_after_each_block():
    plain = plain_model(torch.float64)
    relaxed = relax(copy.deepcopy(plain))
    set_random_thetas_(relaxed)
    data = compute_neighborlist_(from_dict({"pos": cluster(), "atom_types": TYPES}), R_MAX)
    out_plain, out_relaxed = plain(dict(data)), relaxed(dict(data))
    assert torch.equal(out_plain["edge_attrs"], out_relaxed["edge_attrs"])
    assert not torch.allclose(out_plain["total_energy"], out_relaxed["total_energy"])


def test_jointly_equivariant_for_any_theta(dtype):
    assert_jointly_equivariant(energy_forces, relax(plain_model(dtype), irreps_relaxed=2), dtype, seed=1)


def test_polar_theta_keeps_exactly_its_stabilizer(dtype):
    axis = random_axis(seed=4)
    model = relax(plain_model(dtype), irreps_relaxed=2)
    set_polar_thetas_(model, axis)
    pos = cluster(seed=5)
    perpendicular = torch.linalg.cross(axis, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    kept = [rotation_about(axis, 0.9), rotation_about(axis, -2.3), reflection(perpendicular),
            reflection(torch.linalg.cross(axis, perpendicular)) @ rotation_about(axis, 0.4)]
    for g in kept:
        assert symmetry_error(energy_forces, model, pos, g) <= tolerance(dtype, "rel")
    broken = [INVERSION, rotation_about(perpendicular, math.pi / 2), reflection(axis)]
    for g in broken:
        assert symmetry_error(energy_forces, model, pos, g) > 1e-3
    # negative control: the check sees nothing at θ_breaking = 0
    strict = relax(plain_model(dtype), irreps_relaxed=2)
    assert symmetry_error(energy_forces, strict, pos, INVERSION) <= tolerance(dtype, "rel")


def test_projected_thetas_make_the_model_exactly_equivariant():
    model = relax(plain_model(torch.float64), irreps_relaxed=2)
    set_random_thetas_(model, seed=6)
    pos = cluster(seed=7)
    assert symmetry_error(energy_forces, model, pos, rotation_about([0, 0, 1], math.pi / 2)) > 1e-3
    project_thetas(model, "C4v")
    for g in (rotation_about([0, 0, 1], math.pi / 2), reflection([1, 0, 0])):
        assert symmetry_error(energy_forces, model, pos, g) <= tolerance(torch.float64, "rel")


def test_builder_records_a_recipe_and_keeps_global_state():
    default, e3nn_defaults = torch.get_default_dtype(), dict(get_optimization_defaults())
    model = relaxed_nequip_model(config(), irreps_relaxed=1, relax_at="edge")
    assert torch.get_default_dtype() == default
    assert get_optimization_defaults()["jit_mode"] == e3nn_defaults["jit_mode"]  # NequIP leaves "script"
    recipe = recipe_of(model)
    assert recipe["host"] == "NequIP" and recipe["relax_at"] == "edge" and recipe["dtype"] == "float64"
    assert recipe["config"]["_target_"] == "nequip.model.NequIPGNNModel"
    wrapped = [m.block for m in model.modules() if isinstance(m, RelaxedHostBlock)]
    assert len(wrapped) == 2 and all(isinstance(block, InteractionBlock) for block in wrapped)
    assert sum(isinstance(m, InteractionBlock) for m in model.modules()) == 2


def test_save_and_load_a_relaxed_nequip_model(tmp_path):
    model = relaxed_nequip_model(config(), irreps_relaxed=2)
    set_random_thetas_(model, seed=8)
    pos = cluster(seed=9)
    path = tmp_path / "nequip.pt"
    relaxed_e3nn.save(model, path)
    payload = torch.load(path, weights_only=True)
    assert payload["kind"] == "NequIP" and payload["recipe"]["host"] == "NequIP"
    loaded = relaxed_e3nn.load(path, kind="NequIP")
    assert not loaded.training
    model.eval()  # NequIP's forces differ in the last bit between training and evaluation mode
    energy, forces = energy_forces(model, pos)
    energy_loaded, forces_loaded = energy_forces(loaded, pos)
    assert torch.equal(energy, energy_loaded) and torch.equal(forces, forces_loaded)
    assert recipe_of(loaded) == recipe_of(model)


def test_saving_a_relaxed_model_without_recipe_says_how(tmp_path):
    model = relax(plain_model(torch.float64))
    with pytest.raises(TypeError, match="recipe"):
        relaxed_e3nn.save(model, tmp_path / "no_recipe.pt")
    assert not (tmp_path / "no_recipe.pt").exists()


def test_nequip_optimizer_config_builds_the_theta_optimizer():
    # what NequIP's training module does with its `optimizer` config
    model = relaxed_nequip_model(config())
    optimizer_config = {"_target_": "relaxed_e3nn.nn.RelaxedOptimizer", "lr": 0.01,
                        "param_groups": {"_target_": "relaxed_e3nn.nn.relaxed_param_groups", "lr": 0.01,
                                         "theta_penalty": 1e-4}}
    param_groups = instantiate(optimizer_config.pop("param_groups"), model=model)
    optimizer = get_class(optimizer_config.pop("_target_"))(params=param_groups, **optimizer_config)
    kinds = [group["kind"] for group in optimizer.param_groups]
    assert kinds == ["adam", "theta_irrep_adam"]
    energy, forces = energy_forces(model, cluster())
    (energy.sum() + forces.pow(2).sum()).backward()
    before = [theta.detach().clone() for _, _, theta in relaxed_parameters(model)]
    optimizer.step()
    assert any(not torch.equal(b, theta) for b, (_, _, theta) in zip(before, relaxed_parameters(model)))


def test_bad_input():
    with pytest.raises(ValueError, match="relax_at"):
        relax(plain_model(torch.float64), relax_at="edges")
    with pytest.raises(ValueError, match="_target_"):
        relaxed_nequip_model(dict(config(), _target_="os.system"))
    with pytest.raises(ValueError, match="model_dtype"):
        relaxed_nequip_model({k: v for k, v in config().items() if k != "model_dtype"})
    with pytest.raises(ValueError, match="model"):
        relaxed_nequip_model(["not", "a", "config"])
    block = next(m for m in relax(plain_model(torch.float64)).modules() if isinstance(m, RelaxedNequIPInteraction))
    with pytest.raises(ValueError, match="edge_attr"):
        block.relax_edge_attr(torch.zeros(5, 4, dtype=torch.float64))


@pytest.mark.slow
def test_finetune_example_runs_in_its_quick_form(capsys):
    import importlib.util  # the example is a script, not a module of the package
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "finetune_nequip.py"
    spec = importlib.util.spec_from_file_location("finetune_nequip", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    default = torch.get_default_dtype()
    assert module.main(["--quick"]) == 0
    assert torch.get_default_dtype() == default
    out = capsys.readouterr().out
    assert "strict" in out and "relaxed" in out and "meV/Å" in out
    assert "validated residual group:" in out
