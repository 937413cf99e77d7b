"""A sweep file read and checked (:class:`SweepSpec`); running it is :mod:`fedalign.sweep`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, read_yaml
from .sweep_tables import NOISE_CONTROL


@dataclass
class SweepSpec:
    base: Path
    grid: dict[str, list[Any]]
    output: Path
    overrides: list[str] = field(default_factory=list)
    engine: str = "inprocess"
    plot: dict[str, str] = field(default_factory=dict)
    arms: dict[str, list[str]] = field(default_factory=dict)  # arm name -> its overrides (grid key "arm")
    name: str = ""  # for progress lines: the sweep file's stem
    noise_controls: bool = False  # add a noise-control twin beside every DP-statistics cell
    purpose: str = "study"  # study or tuning (recorded in sweep.json)

    @property
    def axes(self) -> list[tuple[tuple[str, ...], list[tuple]]]:
        """The grid as (config keys, value tuples) per grid entry; a zipped entry has several keys."""
        return [
            (split_key(key), [tuple(v) if len(split_key(key)) > 1 else (v,) for v in values])
            for key, values in self.grid.items()
        ]

    @property
    def keys(self) -> list[str]:
        """Every config key the grid sets, zipped keys one by one, in grid order."""
        return [k for keys, _ in self.axes for k in keys]

    @property
    def group_keys(self) -> list[str]:
        """Grid keys that define a table row (all but the seed; with noise controls, ``privacy.noise_control``)."""
        extra = [NOISE_CONTROL] if self.noise_controls and NOISE_CONTROL not in self.keys else []
        return [k for k in self.keys if k != "seed"] + extra

    def values_of(self, key: str) -> list[Any]:
        """The values the grid gives one config key (for a zipped key: its entry in each tuple).

        Args:
            key: a dotted config key of the grid.
        """
        for keys, values in self.axes:
            if key in keys:
                return [v[keys.index(key)] for v in values]
        raise KeyError(key)


def split_key(key: str) -> tuple[str, ...]:
    """``"a.b,c.d"`` -> ``("a.b", "c.d")``; a plain key -> a 1-tuple.

    Args:
        key: a grid key.
    """
    return tuple(part.strip() for part in str(key).split(","))


SWEEP_KEYS = {"base", "set", "grid", "engine", "output", "plot", "arms", "arms_file", "noise_controls", "purpose"}
PURPOSES = ("study", "tuning")
ARM = "arm"  # the grid key that picks a named arm


def read_sweep_spec(path: str | Path) -> SweepSpec:
    """Read a sweep file and check its keys, grid, options and arms (not yet its cells' configs:
    :func:`fedalign.sweep.load_sweep` does that too).

    Args:
        path: the sweep file (YAML; see :mod:`fedalign.sweep`).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {str(path)!r} not found")
    raw = read_yaml(path) or {}
    unknown = set(raw) - SWEEP_KEYS
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown sweep key (valid: {', '.join(sorted(SWEEP_KEYS))})")
    for key in ("base", "grid", "output"):
        if key not in raw:
            raise ConfigError(f"{key}: missing from the sweep file {path}")
    grid = raw["grid"]
    _check_grid(grid)
    _check_options(raw)
    arms = _read_arms(raw, path)
    unknown_arms = [a for a in grid.get(ARM, []) if a not in arms]
    if unknown_arms:
        raise ConfigError(
            f"grid: arm: {unknown_arms[0]!r} is not defined under arms"
            + (f" or in arms_file {raw['arms_file']}" if raw.get("arms_file") else "")
            + f" (defined: {', '.join(arms) or 'none'})"
        )
    return SweepSpec(
        base=(path.parent / raw["base"]).resolve(),
        grid=grid,
        output=(path.parent / raw["output"]).resolve(),
        overrides=list(raw.get("set") or []),
        engine=raw.get("engine", "inprocess"),
        plot=raw.get("plot") or {},
        arms=arms,
        name=path.stem,
        noise_controls=raw.get("noise_controls", False),
        purpose=raw.get("purpose", "study"),
    )


def _check_grid(grid: object) -> None:
    """Raise :class:`ConfigError` unless ``grid`` maps distinct config keys (zipped ones too) to non-empty lists."""
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError("grid: expected a mapping of config keys to non-empty lists of values")
    seen: set[str] = set()
    for key, values in grid.items():
        names = split_key(key)
        if not all(names) or len(set(names)) != len(names) or seen & set(names):
            raise ConfigError(
                f"grid: {key}: every config key may appear once in the grid, and a zipped key is a "
                "comma-separated list of distinct keys, e.g. federation.num_clients,federation.rounds"
            )
        seen |= set(names)
        if len(names) > 1:
            for value in values:
                if not isinstance(value, list) or len(value) != len(names):
                    raise ConfigError(
                        f"grid: {key}: zipped keys take lists of {len(names)} values "
                        f"(one per key), e.g. [[2, 100], [3, 150]]; got {value!r}"
                    )


def _check_options(raw: dict) -> None:
    """Raise :class:`ConfigError` for a wrong ``engine``, ``noise_controls`` or ``purpose``."""
    if raw.get("engine", "inprocess") not in ("inprocess", "flower"):
        raise ConfigError(f"engine: must be 'inprocess' or 'flower', got {raw['engine']!r}")
    if not isinstance(raw.get("noise_controls", False), bool):
        raise ConfigError(f"noise_controls: must be true or false, got {raw['noise_controls']!r}")
    if raw.get("purpose", "study") not in PURPOSES:
        raise ConfigError(f"purpose: must be one of {', '.join(PURPOSES)}, got {raw['purpose']!r}")


def _read_arms(raw: dict, path: Path) -> dict[str, list[str]]:
    arms = dict(raw.get("arms") or {})
    files = raw.get("arms_file") or []
    for name in [files] if isinstance(files, str) else files:
        arms_path = path.parent / name
        if not arms_path.is_file():
            raise ConfigError(
                f"arms_file: {arms_path} not found; it is written by the step that defines these "
                "arms (e.g. the tuning step of bench/reproduce.py): run that first"
            )
        arms.update(read_yaml(arms_path) or {})
    for name, overrides in arms.items():
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ConfigError(f"arms: {name}: expected a list of key.path=value overrides, got {overrides!r}")
    return arms
