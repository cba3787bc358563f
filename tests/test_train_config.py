"""Training configs: YAML files, dotted flag overrides, validation with helpful errors."""
import pytest
import yaml

from relaxed_e3nn.train import TrainConfig, load_config
from relaxed_e3nn.train._config import apply_overrides, parse_overrides


def _minimal(**extra):
    config = {"data": {"train": "x.xyz"}}
    config.update(extra)
    return config


def test_defaults_and_round_trip():
    cfg = TrainConfig.from_dict(_minimal(model={"num_layers": 1}, loss={"forces": 5}))
    assert cfg.epochs == 100 and cfg.optim.name == "adam" and cfg.data.val_fraction == 0.1
    assert cfg.loss_weight("forces") == 5.0 and cfg.loss_weight("energy") == 1.0 and cfg.loss_weight("stress") == 0.0
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict())) == cfg.to_dict()


def test_parse_overrides_types_and_forms():
    got = parse_overrides(["--model.num_layers", "2", "--strict", "--optim.lr=0.005", "--data.node_targets",
                           "[displacements]", "--ema_decay", "null", "--output-dir", "runs/x", "--resume"])
    assert got == {"model.num_layers": 2, "strict": True, "optim.lr": 0.005,
                   "data.node_targets": ["displacements"], "ema_decay": None, "output_dir": "runs/x",
                   "resume": True}
    with pytest.raises(ValueError, match="unexpected argument"):
        parse_overrides(["epochs", "3"])


def test_flags_override_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 7\nmodel:\n  num_layers: 3\n  lmax: 2\ndata:\n  train: a.xyz\n")
    raw = load_config(path, {"model.num_layers": 1, "optim.lr": 0.1})
    assert raw["epochs"] == 7 and raw["model"] == {"num_layers": 1, "lmax": 2} and raw["optim"] == {"lr": 0.1}
    cfg = TrainConfig.from_dict(raw)
    assert cfg.model["num_layers"] == 1 and cfg.optim.lr == 0.1


def test_override_into_scalar_rejected():
    with pytest.raises(ValueError, match="not a mapping"):
        apply_overrides({"epochs": 3}, {"epochs.x": 1})


@pytest.mark.parametrize("config, match", [
    (_minimal(epocs=3), "unknown key 'epocs'; did you mean 'epochs'"),
    ({"data": {"train": "a", "val_fractoin": 0.1}}, "did you mean 'val_fraction'"),
    (_minimal(optim={"learning_rate": 0.1}), "unknown key 'learning_rate'"),
    (_minimal(loss={"force": 1.0}), "did you mean 'forces'"),
    (_minimal(dtype="float16"), "dtype must be one of"),
    (_minimal(optim={"scheduler": "step"}), "optim.scheduler"),
    (_minimal(batch_size=0), "batch_size must be >= 1"),
    (_minimal(ema_decay=1.5), "ema_decay"),
    (_minimal(data={"train": "a", "val_fraction": 0.6, "test_fraction": 0.5}), "must be < 1"),
    ({"epochs": 3}, "data.train is required"),
    (_minimal(task="dynamics"), "task must be 'box_dynamics'"),
    (_minimal(loss={"energy": -1}), "loss.energy must be a number >= 0"),
])
def test_bad_values_raise_value_error(config, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict(config)


@pytest.mark.parametrize("config, match", [
    (_minimal(epochs="ten"), "epochs must be an int"),
    (_minimal(epochs=2.5), "epochs must be an int"),
    (_minimal(strict="yes"), "strict must be a bool"),
    (_minimal(optim={"lr": "fast"}), "optim.lr must be a float"),
    (_minimal(model=[1, 2]), "model must be a mapping"),
    (_minimal(data=3), "'data' must be a mapping"),
    ("not a mapping", "expected a mapping"),
])
def test_wrong_types_raise_type_error(config, match):
    with pytest.raises(TypeError, match=match):
        TrainConfig.from_dict(config)


def test_int_accepted_where_float_expected():
    cfg = TrainConfig.from_dict(_minimal(optim={"lr": 1}))
    assert cfg.optim.lr == 1


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(listing)


def test_loss_keys_follow_targets():
    cfg = TrainConfig.from_dict({"data": {"train": "a", "node_targets": ["displacements"]},
                                 "loss": {"displacements": 2.0}})
    assert cfg.loss_weight("displacements") == 2.0
    with pytest.raises(ValueError, match="unknown key 'displacement'"):
        TrainConfig.from_dict({"data": {"train": "a", "node_targets": ["displacements"]},
                               "loss": {"displacement": 2.0}})
