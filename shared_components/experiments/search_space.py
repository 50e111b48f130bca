"""Search spaces over bundle overrides for Optuna: a YAML (or dict) with one entry per override key.

```yaml
loss_name: {choices: [dice_ce, focal, tversky]}           # trial.suggest_categorical
learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}      # trial.suggest_float
batch_size: {low: 2, high: 8, step: 2}                     # trial.suggest_int (int bounds)
network_def#channels: {choices: [[16, 32, 64, 128], [32, 64, 128, 256]]}   # any header key, lists too
optimizer_name: default                                    # {} or default: the preset registry's range
```

Keys are checked against the bundle's merged ``train.yaml`` (nested ``#`` ids, new entries of a dict such as
``loss_args#gamma``) before anything runs; a typo is refused with the closest ids. ``{}``/``default`` takes the
range of :mod:`shared_components.training.registry`: all presets for a preset key (``loss_name``), else the search
range the presets declare for that key. A key only some presets of a kind declare (``loss_args#gamma``: focal and
dice_focal) is conditional: sampled only in trials whose preset (sampled, or the bundle's default) declares it.
Optuna's categorical choices must be scalars, so list and dict choices are stored as JSON strings and decoded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared_components.training import registry

SPEC_KEYS = {"choices", "low", "high", "log", "step", "type"}
DEFAULT_WORDS = ("default", "registry")
# a kind's preset arguments, reset to {} when a trial switches to another preset (they belong to the old one)
ARGS_KEYS = {"loss": "loss_args"}
_SCALAR = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Param:
    """One searched override: ``choices`` (decoded values), or a ``low``-``high`` range (``log``, ``step``,
    ``integer``); ``when`` = (preset key, names): sampled only when that key takes one of the names."""

    key: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False
    when: tuple[str, tuple[str, ...]] | None = None
    source: str = "space"

    @property
    def encoded(self) -> bool:
        """Choices stored as JSON strings (a list or dict among them)."""
        return self.choices is not None and any(not isinstance(c, _SCALAR) for c in self.choices)

    def encode(self, value: Any) -> Any:
        return json.dumps(value) if self.encoded else value

    def decode(self, value: Any) -> Any:
        if not self.encoded:
            return value
        for c in self.choices or ():
            if json.dumps(c) == value:
                return c
        return json.loads(value)

    def suggest(self, trial: Any) -> Any:
        """Sample this parameter in an Optuna trial; returns the decoded value."""
        if self.choices is not None:
            return self.decode(trial.suggest_categorical(self.key, [self.encode(c) for c in self.choices]))
        if self.integer:
            step = int(self.step or 1)
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return any(json.dumps(c) == json.dumps(value) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return self.low <= value <= self.high and (not self.integer or float(value).is_integer())

    def grid(self) -> list[Any]:
        """The (encoded) values a grid search visits: the choices, or the steps of a stepped range."""
        if self.choices is not None:
            return [self.encode(c) for c in self.choices]
        if self.step is None:
            raise ValueError(
                f"--sampler grid needs discrete values: give {self.key} choices or a step (got {self.low} to {self.high})."
            )
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        values = [self.low + i * self.step for i in range(n + 1)]
        return [int(round(v)) for v in values] if self.integer else [round(v, 12) for v in values]

    def describe(self) -> str:
        if self.choices is not None:
            text = "{" + ", ".join(json.dumps(c) if not isinstance(c, str) else c for c in self.choices) + "}"
        else:
            text = f"{self.low:g} to {self.high:g}" + (" (log)" if self.log else "")
            text += f", step {self.step:g}" if self.step else ""
            text += " (int)" if self.integer else ""
        if self.when:
            text += f"; only with {self.when[0]} in {{{', '.join(self.when[1])}}}"
        return text


@dataclass
class SearchSpace:
    """The searched overrides of a bundle (in sampling order: preset keys first) and the bundle's raw default
    values of those keys (``defaults``, from train.yaml with the study's fixed overrides)."""

    params: dict[str, Param]
    defaults: dict[str, Any] = field(default_factory=dict)

    def active(self, param: Param, values: Mapping[str, Any]) -> bool:
        if param.when is None:
            return True
        key, names = param.when
        return str(values.get(key, self.defaults.get(key))) in names

    def sample(self, trial: Any) -> dict[str, Any]:
        """The decoded values of one trial (conditional parameters only when they apply)."""
        values: dict[str, Any] = {}
        for p in self.params.values():
            if self.active(p, values):
                values[p.key] = p.suggest(trial)
        return values

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Decoded values of a finished trial's ``params``."""
        return {k: self.params[k].decode(v) if k in self.params else v for k, v in params.items()}

    def overrides(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Bundle overrides of decoded ``values``: a trial that switches a kind's preset gets that kind's argument
        dict reset (``loss_args``: ``{}`` plus the sampled ``loss_args#...`` entries)."""
        out = dict(values)
        for kind, args_key in ARGS_KEYS.items():
            selector = registry.CONFIG_KEYS[kind]
            if selector in out and str(out[selector]) != str(self.defaults.get(selector)):
                prefix = args_key + "#"
                entries = {k[len(prefix) :]: out.pop(k) for k in list(out) if k.startswith(prefix)}
                out[args_key] = entries
        return out

    def default_params(self) -> dict[str, Any]:
        """Encoded parameters of the bundle's defaults, for the parameters whose default lies in the space (the
        others are left for the sampler)."""
        params: dict[str, Any] = {}
        chosen: dict[str, Any] = {}
        for p in self.params.values():
            if not self.active(p, chosen):
                continue
            value = self.defaults.get(p.key)
            if p.key in self.defaults and p.contains(value):
                params[p.key] = p.encode(value)
                chosen[p.key] = value
        return params

    def grid_space(self) -> dict[str, list[Any]]:
        """Optuna ``GridSampler`` search space (conditional parameters cannot be gridded)."""
        conditional = [p.key for p in self.params.values() if p.when]
        if conditional:
            raise ValueError(f"--sampler grid cannot search conditional parameters {conditional}; drop them.")
        return {p.key: p.grid() for p in self.params.values()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored with the study, so ``best`` and ``report`` need no YAML)."""
        return {"params": [asdict(p) for p in self.params.values()], "defaults": self.defaults}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        params = {}
        for d in data["params"]:
            d = dict(d)
            if d.get("choices") is not None:
                d["choices"] = tuple(d["choices"])
            if d.get("when") is not None:
                d["when"] = (d["when"][0], tuple(d["when"][1]))
            params[d["key"]] = Param(**d)
        return cls(params, dict(data.get("defaults", {})))

    def markdown(self) -> str:
        rows = ["| override | searched | from |", "|---|---|---|"]
        rows += [f"| `{p.key}` | {p.describe()} | {p.source} |" for p in self.params.values()]
        return "\n".join(rows) + "\n"


# ---- reading and checking a space -------------------------------------------------------------------------------


def read_space(space: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The raw space: a YAML/JSON file, a YAML string, or a dict."""
    if isinstance(space, Mapping):
        return dict(space)
    path = Path(str(space))
    if path.is_file():
        data = yaml.safe_load(path.read_text())
    elif str(space).strip().startswith("{"):
        data = yaml.safe_load(str(space))
    else:
        raise FileNotFoundError(f"No search space file {space}: give --space space.yaml (see README, Optuna).")
    if not isinstance(data, dict) or not data:
        raise ValueError(f"The search space {space} must map override keys to ranges, e.g. 'learning_rate: default'.")
    return data


def bundle_config(bundle_dir: Path, overrides: Mapping[str, Any] | None = None) -> Any:
    """The bundle's merged train.yaml (``ConfigParser``, raw values) with ``overrides`` applied."""
    from shared_components.workflow.invocation import load_config

    parser = load_config([str(Path(bundle_dir) / "configs" / "train.yaml")])
    parser.update(dict(overrides or {}))
    return parser


def check_keys(parser: Any, keys: Sequence[str], what: str = "search space") -> None:
    """Refuse keys that are no override of the bundle, with the closest valid ids."""
    from shared_components.workflow.invocation import unknown_overrides

    messages = unknown_overrides(parser, list(keys))
    if messages:
        raise ValueError(f"The {what} names keys the bundle does not have:\n  " + "\n  ".join(messages))


def raw_default(parser: Any, key: str) -> tuple[bool, Any]:
    """(found, value) of ``key`` in the raw config; expressions (``$...``, ``@...``) count as not found."""
    try:
        value = parser[key]
    except (KeyError, IndexError, TypeError, ValueError):
        return False, None
    if isinstance(value, str) and value.startswith(("$", "@", "%")):
        return False, None
    return True, value


def _number(key: str, name: str, v: Any) -> float | int:
    if isinstance(v, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            v = float(v)
        except ValueError as e:
            raise ValueError(f"{key}: {name} must be a number, got {v!r}.") from e
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{key}: {name} must be a number, got {v!r}.")
    return v


def _param(key: str, spec: Mapping[str, Any], when: Any = None, source: str = "space") -> Param:
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ValueError(
            f"{key}: unknown field(s) {sorted(unknown)}; a range is {{low, high[, log, step]}} or {{choices}}."
        )
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) - {"choices", "type"} or not isinstance(choices, list | tuple) or not choices:
            raise ValueError(f"{key}: choices must be a non-empty list (and nothing else), got {dict(spec)}.")
        encoded = [json.dumps(c) for c in choices]
        if len(set(encoded)) != len(encoded):
            raise ValueError(f"{key}: duplicate choices {list(choices)}.")
        return Param(key, choices=tuple(choices), when=when, source=source)
    if not {"low", "high"} <= set(spec):
        raise ValueError(f"{key}: give {{low, high}} (and log/step) or {{choices}}, got {dict(spec)}.")
    low, high = _number(key, "low", spec["low"]), _number(key, "high", spec["high"])
    step = None if spec.get("step") is None else _number(key, "step", spec["step"])
    log = bool(spec.get("log", False))
    kind = spec.get("type")
    if kind not in (None, "int", "float"):
        raise ValueError(f"{key}: type is int or float, got {kind!r}.")
    integer = kind == "int" or (
        kind is None and all(isinstance(v, int) for v in (low, high)) and (step is None or isinstance(step, int))
    )
    if not low < high or (log and low <= 0):
        raise ValueError(f"{key}: need low < high (and low > 0 with log), got {dict(spec)}.")
    if log and step is not None:
        raise ValueError(f"{key}: Optuna cannot combine log and step.")
    if step is not None and step <= 0:
        raise ValueError(f"{key}: step must be positive, got {step}.")
    return Param(key, low=low, high=high, log=log, step=step, integer=integer, when=when, source=source)


def _owners(key: str) -> dict[str, list[registry.Preset]]:
    """The presets declaring a search range for ``key``, per kind."""
    out: dict[str, list[registry.Preset]] = {}
    for kind in registry.PROVIDERS:
        hits = [p for p in registry.presets(kind) if key in p.search]
        if hits:
            out[kind] = hits
    return out


def _envelope(key: str, specs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One range covering several presets' ranges (union of choices; lowest low, highest high)."""
    if all("choices" in s for s in specs):
        return {"choices": list(dict.fromkeys(c for s in specs for c in s["choices"]))}
    if any("choices" in s for s in specs):
        raise ValueError(f"{key}: the presets declare incompatible ranges {list(specs)}; give the range yourself.")
    out = {"low": min(s["low"] for s in specs), "high": max(s["high"] for s in specs)}
    if all(s.get("log") for s in specs):
        out["log"] = True
    steps = {s.get("step") for s in specs}
    if len(steps) == 1 and None not in steps:
        out["step"] = steps.pop()
    return out


def load_space(
    space: str | Path | Mapping[str, Any], bundle_dir: Path, overrides: Mapping[str, Any] | None = None
) -> SearchSpace:
    """Parse and check a space against the bundle (with the study's fixed ``overrides``): keys exist, preset
    names are registered, conditional keys can apply, ``{}``/``default`` become the registry's ranges."""
    raw = read_space(space)
    parser = bundle_config(bundle_dir, overrides)
    check_keys(parser, list(raw))
    selectors = {key: kind for kind, key in registry.CONFIG_KEYS.items()}
    defaults = {}
    for key in list(raw) + list(selectors):
        found, value = raw_default(parser, key)
        if found:
            defaults[key] = value
    params: dict[str, Param] = {}
    # preset keys first: the ranges of the other keys depend on which presets are searched
    for key in sorted(raw, key=lambda k: k not in selectors):
        spec = raw[key]
        if isinstance(spec, list):
            spec = {"choices": spec}
        is_default = spec is None or spec == {} or (isinstance(spec, str) and spec.lower() in DEFAULT_WORDS)
        if not is_default and not isinstance(spec, Mapping):
            raise ValueError(
                f"{key}: expected {{low, high}}, {{choices}}, a list of choices or 'default'; got {spec!r}."
            )
        if key in selectors:
            kind = selectors[key]
            spec = {"choices": list(registry.names(kind))} if is_default else spec
            p = _param(key, spec, source="registry" if is_default else "space")
            for name in p.choices or ():
                registry.get(kind, str(name))  # unknown preset names fail now, listing the known ones
            if p.choices is None:
                raise ValueError(f"{key} selects a {kind} preset: give choices, e.g. {list(registry.names(kind))}.")
            params[key] = p
            continue
        when, candidates = None, None
        owners = _owners(key)
        for kind, hits in owners.items():
            selector = registry.CONFIG_KEYS[kind]
            searched = params[selector].choices if selector in params else (defaults.get(selector),)
            active = [str(c) for c in searched or ()]
            usable = [p for p in hits if p.name in active]
            if len(hits) < len(registry.names(kind)):  # only some presets of the kind take this key
                if not usable:
                    where = "the space searches" if selector in params else f"the bundle uses ({active[0]})"
                    raise ValueError(
                        f"{key} applies to {selector} in {{{', '.join(p.name for p in hits)}}} only, none of which "
                        f"{where}: search {selector} too, or drop {key}."
                    )
                when = (selector, tuple(p.name for p in usable))
            candidates = usable or hits
        if is_default:
            if not candidates:
                raise ValueError(
                    f"{key}: no preset declares a default range for it; give {{low, high}} or {{choices}}."
                )
            spec = _envelope(key, [p.search[key] for p in candidates])
        params[key] = _param(key, spec, when=when, source="registry" if is_default else "space")
    return SearchSpace(params, defaults)
