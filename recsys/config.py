"""Configuration: every default lives in a dataclass (training and protocol here, each model's beside its model),
YAML files and `--set KEY=VALUE` only override them.

Precedence: the dataclass defaults < a YAML file (`--config`, e.g. a model's recipe in configs/) < the command
line. A RunConfig is recorded flat in run.json (`as_dict`) and read back with `from_dict`, so a saved run and a
fresh one are built by the same code.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from recsys.validation import check_value

LITERATURE_SPLITS = ("random", "kfold", "ml100k-folds")
# names earlier runs recorded, read as today's (old run.json files keep loading)
_LEGACY = {"ss4rec": {"ss4rec_dropout": "dropout"}}
# what earlier runs recorded inside their config but is a fitted result, not a setting (now in run.json "fitted")
_RECORDED_RESULTS = {"chosen_reg"}


class ConfigError(ValueError):
    """A configuration value is unknown or out of range; the message says which and what is allowed."""


@dataclass
class TrainConfig:
    # data and protocol
    dataset: str | None = None          # release name; None: detected from data_dir, else the embedded ml-100k
    data_dir: str | None = None         # folder with the release's files
    objective: str = "ranking"          # ranking (leave-one-out full ranking) | rating (RMSE/MAE)
    split: str = "chronological"        # rating split: chronological | random | kfold | ml100k-folds
    fold: int = 1                       # kfold / ml100k-folds fold (1-based)
    k: int = 5                          # kfold folds
    test_frac: float = 0.1              # random split test share
    valid_frac: float = 0.1             # literature splits: share of train rows held out for early stopping
    user_k: int | None = None           # k-core on users; None: 5 for leave-one-out, 1 for literature splits
    item_k: int | None = None           # k-core on items; same rule
    timestamped_users_only: bool = False  # drop users with any rating lacking a timestamp (ML-1M shared copy)
    tie_order: str = "file"             # order of a user's ratings that share a second: file (source order, as
                                        # RecBole) | shuffled (seeded random: a check on id-ordered files)
    max_len: int = 50                   # history length a sequence model reads (RecBole's MAX_ITEM_LIST_LENGTH)
    window_stride: int | None = None    # sequence training windows: None = non-overlapping (runs before issue 11);
                                        # s = overlapping, every target sees >= max_len - s + 1 items (1: per-prefix)
    mask_seen: bool = False             # drop already-rated movies from the ranking
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])  # ranking cutoffs
    # optimisation
    epochs: int = 30                    # maximum epochs (early stopping may end sooner)
    batch_size: int = 1024              # rows per step (pairs, or windows for sequence models)
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5                   # epochs without a better validation value before stopping
    grad_clip: float = 5.0              # max gradient norm (0: off)
    seed: int = 0
    variant: str = "default"            # a short name for this configuration of the model (e.g. SS4Rec's
                                        # "released"); runs that differ only in seed share it
    device: str = "auto"                # auto | cpu | cuda
    precision: str = "auto"             # auto (bf16 on CUDA) | bf16 | fp32
    eval_batch_size: int = 1024
    cpu_threads: int | None = None      # None: torch's default


@dataclass
class RunConfig:
    """One run's whole configuration: the model's name, the training settings and the model's parameters."""

    model: str
    train: TrainConfig
    params: Any  # the model class's Config dataclass

    def as_dict(self) -> dict:
        """The flat form run.json records and YAML files use."""
        return {**dataclasses.asdict(self.train), **dataclasses.asdict(self.params), "model": self.model}

    @classmethod
    def from_dict(cls, flat: dict) -> RunConfig:
        """A run.json's config; keys earlier versions recorded for other models are ignored."""
        from recsys.models import MODELS

        model = flat.get("model")
        if not isinstance(model, str) or model not in MODELS:  # a ConfigError, as resolve_config's own check gives
            raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
        foreign = {f.name for m in MODELS.values() for f in fields(m.Config)}
        known = {f.name for f in fields(TrainConfig)} | _model_fields(model) | set(_LEGACY.get(model, {}))
        legacy = _LEGACY.get(model, {})
        mine = {k: v for k, v in flat.items() if (k in known or k not in foreign) and k not in _RECORDED_RESULTS
                and not (k in legacy.values() and any(old in flat for old in legacy))}
        return resolve_config(model, {}, {k: v for k, v in mine.items() if k != "model"})


def _model_fields(model: str) -> set[str]:
    from recsys.models import model_class

    return {f.name for f in fields(model_class(model).Config)}


def parse_overrides(items) -> dict:
    """`--set KEY=VALUE` arguments -> {key: value}; values are YAML scalars/lists: 0.001, true, [64, 32], null."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set needs KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


CONFIG_FILE_LIMIT = 1 << 20  # a config file is a page of options; a larger one is not one


def load_config_file(path: str | Path) -> dict:
    """A YAML mapping of options from a regular UTF-8 file of at most 1 MiB (never a device, FIFO or directory)."""
    path = Path(path)
    try:
        if not path.is_file():
            what = "a directory" if path.is_dir() else "not a regular file" if path.exists() else "no such file"
            raise ConfigError(f"{path}: cannot read config ({what})")
        with open(path, "rb") as fh:
            raw = fh.read(CONFIG_FILE_LIMIT + 1)
        if len(raw) > CONFIG_FILE_LIMIT:
            raise ConfigError(f"{path}: a config file of more than {CONFIG_FILE_LIMIT >> 20} MiB is not a config file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: a config file must be UTF-8 text (byte {exc.start} is not)") from None
        cfg = yaml.safe_load(text) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of option: value")
    return cfg


def _apply(obj, values: dict):
    """`obj` with the fields `values` names replaced, each converted and checked against its type and range first."""
    hints = typing.get_type_hints(type(obj))
    out = {}
    try:
        for f in fields(obj):
            if f.name in values:
                out[f.name] = check_value(type(obj), f.name, values[f.name], hints[f.name])
        return dataclasses.replace(obj, **out)
    except ValueError as exc:  # FieldError, or a dataclass's own cross-field check
        raise ConfigError(str(exc)) from None


def resolve_config(model: str, file_cfg: dict, overrides: dict) -> RunConfig:
    """Defaults < file < command line, validated, with derived values filled (the k-core rule)."""
    from recsys.models import MODELS

    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    cls = MODELS[model]
    train_names = {f.name for f in fields(TrainConfig)}
    model_names = _model_fields(model)
    legacy = _LEGACY.get(model, {})
    merged: dict = {}
    for source in (file_cfg, overrides):
        for key, value in source.items():
            if key == "model":
                if value != model:
                    raise ConfigError(f"the config is for model {value!r}, not {model!r}")
                continue
            key = legacy.get(key, key)
            if key not in train_names and key not in model_names:
                raise ConfigError(f"unknown option {key!r} for {model}; known: "
                                  f"{', '.join(sorted(train_names | model_names))}")
            if value is not None or key in ("data_dir", "user_k", "item_k", "cpu_threads", "window_stride"):
                merged[key] = value
    train_defaults = TrainConfig()
    if not cls.trainable or cls.objectives == ("rating",):
        train_defaults.objective = cls.objectives[0]
    train = _apply(train_defaults, merged)
    params = _apply(cls.Config(), merged)
    if train.objective not in ("rating", "ranking"):
        raise ConfigError(f"objective must be rating or ranking, not {train.objective!r}")
    if train.objective not in cls.objectives:
        raise ConfigError(f"the {model} {'floor' if not cls.trainable else 'model'} is a "
                          f"{' / '.join(cls.objectives)} model")
    if (train.objective == "rating" and cls.trainable and cls.reads_history
            and not (getattr(params, "rating_head", False) or getattr(params, "rating_input", False))):
        raise ConfigError(f"a {model} rating run needs a rating head: --set rating_input=true (the rating-aware "
                          f"variant, which reads the history's ratings){' or rating_head=true' * (model == 'ss4rec')}")
    if train.objective == "ranking" and not getattr(params, "ce_weight", 1.0):
        raise ConfigError("a ranking run needs the next-item loss: ce_weight must be > 0")
    if train.objective == "ranking" and train.split != "chronological":
        raise ConfigError("the ranking protocol is leave-one-out by time; --split applies to the rating objective")
    literature = train.split in LITERATURE_SPLITS
    for key in ("user_k", "item_k"):
        if getattr(train, key) is None:  # literature RMSE splits use every rating; leave-one-out uses RecBole's 5-core
            setattr(train, key, 1 if literature else 5)
    for key in ("epochs", "batch_size", "patience", "max_len"):
        if int(getattr(train, key)) < 1:
            raise ConfigError(f"{key} must be at least 1, not {getattr(train, key)}")
    if not float(train.lr) > 0:
        raise ConfigError(f"lr must be positive, not {train.lr}")
    if train.window_stride is not None and not 1 <= int(train.window_stride) <= int(train.max_len):
        raise ConfigError(f"window_stride must be null (non-overlapping windows) or in 1..max_len ({train.max_len}), "
                          f"not {train.window_stride}")
    if train.tie_order not in ("file", "shuffled"):
        raise ConfigError(f"tie_order must be file or shuffled, not {train.tie_order!r}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", train.device):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, not {train.device!r}")
    if train.dataset is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", train.dataset):
        raise ConfigError(f"dataset must be a release name such as ml-1m (letters, digits, - _ .), "
                          f"not {train.dataset!r}")
    if train.split == "kfold" and train.fold > train.k:
        raise ConfigError(f"fold must be in 1..k ({train.k}) for a {train.k}-fold split, not {train.fold}")
    if train.split == "ml100k-folds" and train.fold > 5:
        raise ConfigError(f"fold must be in 1..5 for ML-100K's u1..u5 folds, not {train.fold}")
    if not isinstance(train.variant, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,47}", train.variant):
        raise ConfigError(f"variant must be a short name (letters, digits, - _ . +), not {train.variant!r}")
    return RunConfig(model, train, params)
