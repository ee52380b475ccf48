"""What each model is, gathered without importing torch: the registry of model files, and each model's card.

A model declares its card beside its code, in its own file (`recsys/models/<module>.py`), as a literal
`CARDS = ({...}, ...)`: a tuple of plain dicts, read here with `ast.literal_eval` (no import, so the answer page,
Compare and the API's /runs stay torch-free). A card says

- `key`, `cls`: the registry key (run.json's `model`) and the Recommender class in that file;
- `name`, `colour`: what every page and chart calls it and draws it in;
- `floor`: a closed-form reference every learned model must beat; `objectives`: ranking and/or rating;
- `reads_history`: scores come from the history (a sequence model) rather than the user id;
- `live`: Live can score a history a user builds (a sequence model, or a floor that reads one);
- `target_time`: the settings under which its score depends on the time of the interaction it predicts: one rule
  {field: [values that keep it]} or a list of rules, any of which suffices (absent: never);
- `settings`: the configuration fields a variant may change: their released value, whether another value takes a
  part of the model away (`ablation`: evidence for "why", never a headline candidate), and what each value means;
- `tiny`: configuration overrides for a test-sized model (the generated contract tests train and score it).

The registry (`REGISTRY` below: key -> module) is the one list of models; `recsys.models.MODELS` imports the classes
from it. Adding a model: its file (class, Config, CARDS), its line here, its recipe in `configs/`; the contract tests
(tests/test_contracts.py) and every page then pick it up.
"""
from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parent / "models"

# registry key -> module under recsys/models (order: the order pages list models in)
REGISTRY: dict[str, str] = {
    "ss4rec": "ss4rec",
    "sasrec": "sasrec",
    "tisasrec": "tisasrec",
    "bert4rec": "bert4rec",
    "mamba4rec": "mamba4rec",
    "gru4rec": "gru4rec",
    "narm": "narm",
    "ncf": "ncf",
    "markov": "markov",
    "popular": "baselines",
    "global-mean": "baselines",
    "bias": "baselines",
    "recent-residual": "baselines",
}

CARD_KEYS = {"key", "cls", "name", "colour", "floor", "objectives", "reads_history", "live", "target_time",
             "settings", "tiny"}


class CatalogueError(ValueError):
    """A model file's CARDS is missing, not a literal, or malformed (the message names the file and the key)."""


@dataclass(frozen=True)
class Setting:
    """A configuration field a variant may change, its released value, and what other values mean."""

    released: Any
    meanings: dict = field(default_factory=dict)
    ablation: bool = False

    def is_released(self, value) -> bool:
        if isinstance(self.released, float) and not isinstance(value, bool):
            try:
                return math.isclose(float(value), self.released)
            except (TypeError, ValueError):
                return False
        return value == self.released

    def meaning(self, key: str, value) -> str:
        return self.meanings.get(value, f"{key} = {value}")


@dataclass(frozen=True)
class ModelCard:
    key: str
    cls: str
    module: str
    name: str
    colour: str | None = None
    floor: bool = False
    objectives: tuple[str, ...] = ("ranking",)
    reads_history: bool = False
    live: bool = False
    target_time: tuple[dict, ...] = ()  # rules, any of which makes a score depend on the target's time
    settings: dict[str, Setting] = field(default_factory=dict)
    tiny: dict = field(default_factory=dict)  # overrides that make a test-sized model (the contract tests use them)

    def reads_target_time(self, config: dict) -> bool:
        """Whether a run with this configuration scores by the time of the interaction it predicts."""
        def holds(rule: dict) -> bool:
            return all(config.get(key, self.settings[key].released if key in self.settings else None) in allowed
                       for key, allowed in rule.items())

        return any(holds(rule) for rule in self.target_time)

    @property
    def target_time_fields(self) -> set[str]:
        """Every configuration field a target-time rule reads."""
        return {key for rule in self.target_time for key in rule}

    def changed(self, config: dict) -> list[str]:
        """The settings a configuration moves off their released value (in the card's order)."""
        return [key for key, s in self.settings.items() if not s.is_released(config.get(key, s.released))]

    def changes(self, config: dict) -> list[str]:
        """What a configuration changes from the released one, in words (read from the configuration)."""
        return [self.settings[key].meaning(key, config.get(key, self.settings[key].released))
                for key in self.changed(config)]

    def is_ablation(self, config: dict) -> bool:
        return any(self.settings[key].ablation for key in self.changed(config))


def _literal_cards(module: str) -> list[dict]:
    path = MODELS_DIR / f"{module}.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError) as exc:
        raise CatalogueError(f"{path}: cannot be read for its CARDS ({exc})") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CARDS" for t in node.targets):
            try:
                cards = ast.literal_eval(node.value)
            except ValueError:
                raise CatalogueError(f"{path}: CARDS must be a literal (plain dicts, lists, strings, numbers)") \
                    from None
            if not isinstance(cards, (tuple, list)) or not all(isinstance(c, dict) for c in cards):
                raise CatalogueError(f"{path}: CARDS must be a tuple of dicts")
            return list(cards)
    raise CatalogueError(f"{path}: no CARDS = (...) declaring its models")


def _rules(module: str, raw) -> tuple[dict, ...]:
    """A card's target_time: absent, one rule {field: [values]}, or a list of such rules -> a tuple of rules."""
    if not raw:
        return ()
    rules = [raw] if isinstance(raw, dict) else raw
    if not isinstance(rules, (list, tuple)) or not all(isinstance(r, dict) and r for r in rules):
        raise CatalogueError(f"recsys/models/{module}.py: target_time must be a rule {{field: [values]}} or a list "
                             f"of them")
    return tuple({k: tuple(v) for k, v in r.items()} for r in rules)


def _card(raw: dict, module: str) -> ModelCard:
    unknown = set(raw) - CARD_KEYS
    if unknown or not {"key", "cls", "name"} <= set(raw):
        raise CatalogueError(f"recsys/models/{module}.py: card {raw.get('key')!r} has unknown keys "
                             f"{sorted(unknown)} or lacks key / cls / name")
    settings = {}
    for name, s in (raw.get("settings") or {}).items():
        if not isinstance(s, dict) or "released" not in s:
            raise CatalogueError(f"recsys/models/{module}.py: setting {name!r} of {raw['key']} needs 'released'")
        settings[name] = Setting(s["released"], dict(s.get("meanings") or {}), bool(s.get("ablation", False)))
    return ModelCard(key=raw["key"], cls=raw["cls"], module=module, name=raw["name"], colour=raw.get("colour"),
                     floor=bool(raw.get("floor", False)), objectives=tuple(raw.get("objectives", ("ranking",))),
                     reads_history=bool(raw.get("reads_history", False)), live=bool(raw.get("live", False)),
                     target_time=_rules(module, raw.get("target_time")),
                     settings=settings, tiny=dict(raw.get("tiny") or {}))


@functools.lru_cache(maxsize=1)
def cards() -> dict[str, ModelCard]:
    """Every registered model's card, in registry order (CatalogueError on a missing or malformed one)."""
    found: dict[str, ModelCard] = {}
    by_module: dict[str, dict[str | None, dict]] = {}  # a card without a key is listed under None
    for key, module in REGISTRY.items():
        if module not in by_module:
            by_module[module] = {c.get("key"): c for c in _literal_cards(module)}
        if key not in by_module[module]:
            raise CatalogueError(f"recsys/models/{module}.py declares no card for {key!r} (REGISTRY names it)")
        found[key] = _card(by_module[module][key], module)
    return found


def register(card: ModelCard) -> None:
    """Add a card at run time (a model defined outside recsys/models, e.g. in a test or a plug-in)."""
    cards()[card.key] = card


def unregister(key: str) -> None:
    cards().pop(key, None)


def card(key: str | None) -> ModelCard | None:
    return cards().get(str(key)) if key is not None else None


def display_name(key: str | None) -> str:
    c = card(key)
    return c.name if c else str(key)


def is_floor_model(key: str | None) -> bool:
    c = card(key)
    return bool(c and c.floor)


def floors() -> dict[str, str]:
    """Floor model -> its objective (the closed-form references)."""
    return {k: c.objectives[0] for k, c in cards().items() if c.floor}


def names() -> dict[str, str]:
    return {k: c.name for k, c in cards().items()}


def colours() -> dict[str, str]:
    """Display name -> colour (charts find a label's model by its leading display name)."""
    return {c.name: c.colour for c in cards().values() if c.colour}


def beside_ss4rec() -> tuple[str, ...]:
    """The ranking models Live can put beside SS4Rec, in registry order (a model with `live` also scores a history
    the user builds; the others, NCF, only a known user's)."""
    return tuple(k for k, c in cards().items() if k != "ss4rec" and "ranking" in c.objectives)


def reads_target_time(info: dict) -> bool:
    c = card(info.get("model"))
    return bool(c and c.reads_target_time(info.get("config") or {}))


def changes(info: dict) -> list[str]:
    c = card(info.get("model"))
    return c.changes(info.get("config") or {}) if c else []


def is_ablation(info: dict) -> bool:
    c = card(info.get("model"))
    return bool(c and c.is_ablation(info.get("config") or {}))


__all__ = ["REGISTRY", "CatalogueError", "ModelCard", "Setting", "card", "cards", "changes", "colours",
           "display_name", "floors", "is_ablation", "is_floor_model", "beside_ss4rec", "names", "reads_target_time",
           "register", "unregister"]
