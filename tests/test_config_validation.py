"""Every configuration field has a type and a range, checked before any work starts (issue 26): a bad value is one
line naming the field and what it accepts, exit 2, and no run folder is created."""
from __future__ import annotations

import dataclasses
import errno
import os
import typing
from pathlib import Path

import pytest

from recsys.cli.train import main as train_main
from recsys.config import ConfigError, TrainConfig, load_config_file, parse_overrides, resolve_config
from recsys.models import MODELS
from recsys.validation import FieldError, check_fields

TINY = ["--set", "gmf_dim=8", "--set", "mlp_dims=[16,8]", "--set", "batch_size=4096", "--set", "cpu_threads=1"]

# (model, --set value, words the one-line message must hold)
REFUSED = [
    ("ncf", "grad_clip=-1", "grad_clip must be a number >= 0"),       # gradient ascent, reported complete before
    ("ncf", "mask_seen='false'", "mask_seen must be true or false"),  # a string was truthy: evaluated masked
    ("ncf", "epochs=1.5", "epochs must be an integer"),
    ("ncf", "gmf_dim=0", "gmf_dim must be an integer >= 1"),
    ("ncf", "ks=[5]", "ks must include 10"),                          # crashed after a whole epoch before
    ("ncf", "ks=[0,10]", "ks[0] must be an integer"),
    ("ncf", "ks=five", "ks must be a list"),
    ("ncf", "seed=-1", "seed must be an integer in [0, 4294967295]"),
    ("ncf", "seed=99999999999", "seed must be an integer in [0, 4294967295]"),
    ("ncf", "dropout=2", "dropout must be a number in [0, 1)"),
    ("ncf", "weight_decay=-1", "weight_decay must be a number >= 0"),
    ("ncf", "eval_batch_size=0", "eval_batch_size must be an integer >= 1"),
    ("ncf", "num_negatives=0", "num_negatives must be an integer >= 1"),
    ("ncf", "mlp_dims=[]", "mlp_dims must be a non-empty list"),
    ("ncf", "test_frac=1.5", "test_frac must be a number in (0, 1)"),
    ("ncf", "lr=.nan", "lr must be a number > 0"),
    ("ncf", "device=gpu", "device must be auto, cpu, cuda or cuda:N"),
    ("ncf", "dataset=../../etc", "dataset must be a release name"),
    ("ncf", "batch_size=true", "batch_size must be an integer >= 1"),
    ("sasrec", "hidden_dropout=1", "hidden_dropout must be a number in [0, 1)"),
    ("sasrec", "n_heads=3", "must be a multiple of n_heads"),
    ("ss4rec", "dt_min=0.5", "dt_min (0.5) must be below dt_max"),
    ("ss4rec", "time_unit=0", "time_unit must be a number > 0"),
    ("gru4rec", "num_layers=0", "num_layers must be an integer >= 1"),
    ("recent-residual", "k_grid=[0]", "k_grid[0] must be an integer >= 1"),
]


@pytest.mark.parametrize("model,value,words", REFUSED, ids=[f"{m}:{v}" for m, v, _ in REFUSED])
def test_a_bad_value_is_refused_naming_the_field(model, value, words):
    with pytest.raises(ConfigError) as err:
        resolve_config(model, {}, parse_overrides([value]))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_the_cli_refuses_before_any_work_and_writes_nothing(tmp_path, capsys):
    for value, words in (("grad_clip=-1", "grad_clip"), ("ks=[5]", "ks"), ("mask_seen='false'", "mask_seen")):
        out = tmp_path / value.split("=")[0]
        code = train_main(["--model", "ncf", "--epochs", "1", "--quiet", *TINY, "--set", value, "--out", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {words} must"), err
        assert not out.exists()  # no folder left behind to block a corrected rerun
    fold = train_main(["--model", "bias", "--objective", "rating", "--split", "ml100k-folds", "--fold", "0",
                       "--quiet", "--out", str(tmp_path / "f")])
    assert fold == 2 and "fold must be an integer in [1, 100]" in capsys.readouterr().err
    six = train_main(["--model", "bias", "--objective", "rating", "--split", "ml100k-folds", "--fold", "6",
                      "--quiet", "--out", str(tmp_path / "f")])
    assert six == 2 and "fold must be in 1..5" in capsys.readouterr().err


def test_forgiven_yaml_quirks_are_converted_not_refused():
    cfg = resolve_config("ncf", {"lr": "1e-5", "epochs": 10.0, "mlp_dims": [16, 8]}, {})
    assert cfg.train.lr == 1e-5 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 10 and isinstance(cfg.train.epochs, int)
    assert cfg.params.mlp_dims == [16, 8]


def test_every_default_and_every_shipped_recipe_passes_its_own_checks():
    """The checker and the defaults agree: no field of any model is refused at its default, and every field of
    every model has an annotation the checker understands (a new field with an unknown type fails here)."""
    known = {bool, int, float, str}
    for cls in {TrainConfig, *(m.Config for m in MODELS.values())}:
        check_fields(cls())
        for name, hint in typing.get_type_hints(cls).items():
            args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
            base = typing.get_origin(args[0]) or args[0]
            elem = typing.get_args(args[0])[:1] if base in (list, tuple) else (base,)
            assert base in known | {list, tuple} and all(e in known for e in elem), (cls.__name__, name, hint)
    for path in sorted(Path("configs").glob("*.yaml")):
        cfg = load_config_file(path)
        if "model" in cfg:
            resolve_config(cfg["model"], cfg, {})


def test_check_fields_converts_and_refuses_on_a_dataclass():
    @dataclasses.dataclass
    class Probe:
        width: int = 4
        share: float = 0.5
        LIMITS: typing.ClassVar = {}

    assert check_fields(Probe(width=8.0, share="0.25")) == Probe(8, 0.25)
    with pytest.raises(FieldError, match="width must be an integer >= 1, not 0"):
        check_fields(Probe(width=0))


@pytest.mark.parametrize("kind", ["directory", "fifo", "huge", "latin1", "missing"])
def test_a_config_file_that_is_not_one_is_refused(tmp_path, kind):
    path = tmp_path / "cfg.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # opening it to read would block for good
    elif kind == "huge":
        path.write_text("# padding\n" * 200_000)
    elif kind == "latin1":
        path.write_bytes("variant: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    assert str(path) in str(err.value)
    assert {"directory": "a directory", "fifo": "not a regular file", "huge": "MiB", "latin1": "UTF-8",
            "missing": "no such file"}[kind] in str(err.value)


def test_dev_zero_as_a_config_is_refused_at_once():
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config_file("/dev/zero")


def test_an_os_error_says_resumable_only_when_an_epoch_was_saved(tmp_path, capsys, monkeypatch):
    import recsys.runs as runs_module

    target = tmp_path / "a-file"
    target.write_text("not a folder\n")
    code = train_main(["--model", "ncf", "--epochs", "1", "--quiet", *TINY, "--out", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and "resumed" not in err and "is a file, not a run folder" in err and str(target) in err

    real = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")  # as a real write(): no file named

    monkeypatch.setattr(runs_module.os, "fdopen", lambda fd, mode="r", *a, **k: Full(real(fd, mode, *a, **k)))
    out = tmp_path / "full"
    code = train_main(["--model", "ncf", "--epochs", "1", "--quiet", *TINY, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and str(out) in err and "resumed" not in err
