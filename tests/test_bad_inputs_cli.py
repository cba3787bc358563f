"""Bad input to the ``relaxed-e3nn`` command: one clean error line naming the argument, never a traceback.

One test per case family, parametrised over cases. Each case builds a command line in a fresh
directory and states the exit status it expects and a pattern that the single error line
``relaxed-e3nn COMMAND: error: ...`` must match (the config key, option or path at fault). A
case passes only if :func:`relaxed_e3nn.cli.main` returns (no exception escapes), prints no
traceback, and writes nothing into an output directory it did not already hold.
"""
import errno
import os
import re
from pathlib import Path

import pytest
import torch
import yaml

import relaxed_e3nn
from relaxed_e3nn.cli import main
from relaxed_e3nn.models import RelaxedNetwork, RelaxedNetworkConfig
from relaxed_e3nn.train._outputs import output_dir_lock
from relaxed_e3nn.train._testing import tiny_train_config, write_emt_copper


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Files every case may point at: copper frames, an empty and a garbage file, an untrained model."""
    root = tmp_path_factory.mktemp("bad_cli")
    model = RelaxedNetwork(RelaxedNetworkConfig(species=[29], cutoff=4.0, num_layers=1, irreps_hidden="4x0e+2x1o",
                                                lmax=1, irreps_relaxed=1, radial_neurons=8)).to(torch.float64)
    relaxed_e3nn.save(model, root / "model.pt")
    (root / "empty.xyz").write_text("")
    (root / "garbage.pt").write_text("this is not a model\n")
    torch.save({"weights": torch.zeros(3)}, root / "foreign.pt")
    return {"root": root, "data": write_emt_copper(root / "cu.xyz", n=3, seed=0), "model": root / "model.pt",
            "empty": root / "empty.xyz", "garbage": root / "garbage.pt", "foreign": root / "foreign.pt"}


def run_case(argv, code, pattern, capsys):
    """``main(argv)`` returns ``code`` and prints one error line matching ``pattern``."""
    command = argv[0]
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"relaxed-e3nn {command}: error: ")]
    assert len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]


# --------------------------------------------------------------------------- train: the YAML config
def config_with(shared, out, **changes):
    """The tiny training config on the copper frames, ``changes`` (dotted keys; ``None`` deletes) applied."""
    config = tiny_train_config(str(shared["data"]), out, epochs=1)
    for key, value in changes.items():
        *parents, last = key.split(".")
        section = config
        for name in parents:
            section = section[name]
        if value is None:
            section.pop(last, None)
        else:
            section[last] = value
    return config


CONFIG = {
    "epochs_string": ({"epochs": "ten"}, r"epochs"),
    "epochs_negative": ({"epochs": -3}, r"epochs"),
    "epochs_float": ({"epochs": 2.5}, r"epochs"),
    "batch_size_negative": ({"batch_size": -1}, r"batch_size"),
    "batch_size_zero": ({"batch_size": 0}, r"batch_size"),
    "lr_string": ({"optim.lr": "fast"}, r"lr"),
    "lr_negative": ({"optim.lr": -0.1}, r"lr"),
    "lr_top_level": ({"lr": 0.01}, r"unknown key 'lr'"),
    "data_train_missing": ({"data.train": None}, r"data\.train|train"),
    "unknown_key_suggestion": ({"epochz": 3}, r"unknown key 'epochz'; did you mean 'epochs'"),
    "unknown_nested_key": ({"data.trian": "x.xyz"}, r"'trian'.*did you mean 'train'"),
    "unknown_model_key": ({"model.num_layer": 2}, r"did you mean 'num_layers'"),
    "num_layers_string": ({"model.num_layers": "two"}, r"num_layers"),
    "cutoff_negative": ({"model.cutoff": -1.0}, r"cutoff"),
    "dtype_half": ({"dtype": "float16"}, r"dtype"),
    "val_fraction_above_one": ({"data.val_fraction": 1.5}, r"val_fraction"),
    "seed_string": ({"seed": "x"}, r"seed"),
    "optimizer_unknown": ({"optim.name": "sgdx"}, r"sgdx|name"),
    "patience_negative": ({"patience": -1}, r"patience"),
    "device_unknown": ({"device": "tpu"}, r"device"),
}


@pytest.mark.parametrize("changes, pattern", CONFIG.values(), ids=CONFIG.keys())
def test_train_config_of_wrong_types_or_values(changes, pattern, shared, tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_with(shared, tmp_path / "run", **changes)))
    run_case(["train", path], 1, pattern, capsys)
    assert not (tmp_path / "run").exists()


def _not_a_mapping(tmp_path, shared):
    (tmp_path / "c.yaml").write_text("- a\n- b\n")
    return ["train", tmp_path / "c.yaml"]


def _yaml_syntax(tmp_path, shared):
    (tmp_path / "c.yaml").write_text("epochs: [1, 2\n")
    return ["train", tmp_path / "c.yaml"]


def _with_data(path_key):
    def build(tmp_path, shared):
        config = tiny_train_config(str(shared[path_key]) if path_key in shared else str(tmp_path / path_key),
                                   tmp_path / "run", epochs=1)
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        return ["train", tmp_path / "c.yaml"]
    return build


def _override(*tokens):
    def build(tmp_path, shared):
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_train_config(str(shared["data"]), tmp_path / "run",
                                                                          epochs=1)))
        if not tokens:  # a run's checkpoint already there
            (tmp_path / "run").mkdir()
            (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")
        return ["train", tmp_path / "c.yaml", *tokens]
    return build


TRAIN_FILES = {
    "config_missing": (lambda tmp_path, shared: ["train", tmp_path / "nope.yaml"], r"nope\.yaml"),
    "config_not_a_mapping": (_not_a_mapping, r"c\.yaml|mapping"),
    "config_yaml_syntax": (_yaml_syntax, r"c\.yaml|YAML"),
    "data_file_missing": (_with_data("missing.xyz"), r"missing\.xyz"),
    "data_empty_extxyz": (_with_data("empty"), r"empty\.xyz"),
    "data_not_structures": (_with_data("garbage"), r"garbage\.pt"),
    "flag_wrong_type": (_override("--epochs", "many"), r"epochs must be an int"),
    "flag_unknown": (_override("--batchsize", "4"), r"unknown key 'batchsize'; did you mean 'batch_size'"),
    "flag_without_value": (_override("--epochs"), r"epochs"),
    "checkpoint_without_resume": (_override(), r"already holds a checkpoint; pass --resume"),
}


@pytest.mark.parametrize("build, pattern", TRAIN_FILES.values(), ids=TRAIN_FILES.keys())
def test_train_missing_or_unreadable_files(build, pattern, shared, tmp_path, capsys):
    run_case(build(tmp_path, shared), 1, pattern, capsys)
    assert not (tmp_path / "run").exists() or [p.name for p in (tmp_path / "run").iterdir()] in ([], ["checkpoint.pt"])


# --------------------------------------------------------------------------- evaluate, predict, analyze
def _files(*argv):
    """A command line whose ``{name}`` items are the shared files (``{tmp}`` a fresh directory)."""
    def build(tmp_path, shared):
        return [str(a).format(tmp=tmp_path, **shared) for a in argv]
    return build


MODEL_COMMANDS = {
    "evaluate_model_missing": (_files("evaluate", "{tmp}/none.pt", "{data}"), r"none\.pt"),
    "evaluate_data_missing": (_files("evaluate", "{model}", "{tmp}/none.xyz"), r"none\.xyz"),
    "evaluate_model_not_a_model": (_files("evaluate", "{garbage}", "{data}"), r"garbage\.pt"),
    "evaluate_model_foreign_torch_file": (_files("evaluate", "{foreign}", "{data}"), r"foreign\.pt"),
    "evaluate_data_empty": (_files("evaluate", "{model}", "{empty}"), r"empty\.xyz"),
    "evaluate_batch_size_zero": (_files("evaluate", "{model}", "{data}", "--batch-size", "0"), r"batch_size"),
    "predict_model_missing": (_files("predict", "{tmp}/none.pt", "{data}", "--out", "{tmp}/p.xyz"), r"none\.pt"),
    "predict_data_missing": (_files("predict", "{model}", "{tmp}/none.xyz", "--out", "{tmp}/p.xyz"), r"none\.xyz"),
    "predict_model_not_a_model": (_files("predict", "{garbage}", "{data}", "--out", "{tmp}/p.xyz"), r"garbage\.pt"),
    "predict_out_is_a_directory": (_files("predict", "{model}", "{data}", "--out", "{tmp}"),
                                   r"Is a directory \(/[^,]*\)$"),
    "predict_out_under_a_file": (_files("predict", "{model}", "{data}", "--out", "{data}/p.xyz"),
                                 r"Not a directory \(.*cu\.xyz\)$"),
    "analyze_model_missing": (_files("analyze", "{tmp}/none.pt"), r"none\.pt"),
    "analyze_not_a_model": (_files("analyze", "{garbage}"), r"garbage\.pt"),
    "analyze_foreign_torch_file": (_files("analyze", "{foreign}"), r"foreign\.pt"),
    "analyze_data_as_model": (_files("analyze", "{data}"), r"cu\.xyz"),
    "analyze_within_unknown_group": (_files("analyze", "{model}", "--within", "Xyz"), r"Xyz"),
    "analyze_inputs_missing": (_files("analyze", "{model}", "--inputs", "{tmp}/none.xyz"), r"--inputs.*none\.xyz"),
    "analyze_tol_negative": (_files("analyze", "{model}", "--tol", "-1"), r"tol"),
}


@pytest.mark.parametrize("build, pattern", MODEL_COMMANDS.values(), ids=MODEL_COMMANDS.keys())
def test_model_commands_with_missing_or_wrong_files(build, pattern, shared, tmp_path, capsys):
    run_case(build(tmp_path, shared), 1, pattern, capsys)


# --------------------------------------------------------------------------- generate
GENERATE = {
    "num_samples_negative": (["field_md", "--num-samples", "-5", "--out", "{tmp}/g.xyz"], r"num_samples"),
    "num_samples_zero": (["field_md", "--num-samples", "0", "--out", "{tmp}/g.xyz"], r"num_samples"),
    "unknown_dataset": (["no_such_set", "--out", "{tmp}/g.xyz"], r"unknown generator 'no_such_set'"),
    "name_missing": (["--out", "{tmp}/g.xyz"], r"NAME"),
    "out_missing": (["field_md"], r"--out"),
    "out_is_a_directory": (["field_md", "--num-samples", "2", "--out", "{tmp}"], r"Is a directory \(/[^,]*\)$"),
    "out_under_a_file": (["field_md", "--num-samples", "2", "--out", "{data}/x/g.xyz"],
                         r"Not a directory \(.*cu\.xyz\)$"),
    "option_unknown": (["field_md", "--option", "colour=red", "--out", "{tmp}/g.xyz"], r"no option 'colour'"),
    "option_without_equals": (["field_md", "--option", "E", "--out", "{tmp}/g.xyz"], r"KEY=VALUE"),
    "option_wrong_type": (["perovskite_distortion", "--option", "phase=Xyz", "--out", "{tmp}/g.xyz"], r"phase"),
}


@pytest.mark.parametrize("argv, pattern", GENERATE.values(), ids=GENERATE.keys())
def test_generate_arguments_out_of_range(argv, pattern, shared, tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    run_case(_files("generate", *argv)(tmp_path, shared), 1, pattern, capsys)
    assert not (tmp_path / "g.xyz").exists()


# --------------------------------------------------------------------------- faults: a held output_dir, a full disk
def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_train_on_an_output_dir_another_run_holds(shared, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_with(shared, tmp_path / "run")))
    with output_dir_lock(tmp_path / "run"):
        run_case(["train", path], 1, rf"another run .*holds .*\({re.escape(str(tmp_path / 'run'))}\)", capsys)
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]


FULL_DISK = {
    "train": lambda tmp_path, shared: ["train", _config_file(tmp_path, shared)],
    "generate": lambda tmp_path, shared: ["generate", "field_md", "--num-samples", "2", "--out", tmp_path / "g.xyz"],
    "predict": lambda tmp_path, shared: ["predict", shared["model"], shared["data"], "--out", tmp_path / "p.xyz"],
    "evaluate_json": lambda tmp_path, shared: ["evaluate", shared["model"], shared["data"], "--json",
                                               tmp_path / "m.json"],
}


def _config_file(tmp_path, shared) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_with(shared, tmp_path / "run")))
    return path


@pytest.mark.parametrize("build", FULL_DISK.values(), ids=FULL_DISK.keys())
def test_a_full_disk_is_one_error_line_naming_the_file(build, shared, tmp_path, monkeypatch, capsys):
    argv = build(tmp_path, shared)
    monkeypatch.setattr(os, "fsync", _full_disk)  # every atomic write ends in an fsync
    run_case(argv, 1, rf"error: No space left on device \({re.escape(str(tmp_path))}/", capsys)
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".lock"))


@pytest.mark.parametrize("error", [errno.EACCES, errno.EROFS], ids=["permission", "read_only"])
def test_unwritable_output_is_one_error_line(error, shared, tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "replace", refuse)
    run_case(["generate", "field_md", "--num-samples", "2", "--out", tmp_path / "g.xyz"], 1,
             rf"{re.escape(os.strerror(error))} \({re.escape(str(tmp_path / 'g.xyz'))}\)", capsys)
    assert list(tmp_path.iterdir()) == []
