"""Weighted aliases: an alias splits predictions between versions by relative weight, sticky per routing key, and may copy
each request to a mirror version (services.usecases.mirror runs the copies).

Weights are relative positive integers: 90 and 10, 9 and 1, or 3 and 1 and 1 all work, and each version takes its weight
over the total. A request with a routing key is placed at a point of [0, total) by a SHA-256 of the key, so the same key
gets the same version on every replica and after every restart while the split stays as it is; a request without one
draws its point at random. Versions own consecutive ranges in version order, so shifting weight from one version to
another moves only the keys in the range that changed hands.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass

from services.errors import InvalidInput, NotFound
from services.registry.entities import ModelVersion, Rollout
from services.registry.protocols import UnitOfWork, UowFactory
from services.usecases.versions import DEFAULT_ALIAS, resolve_in

MAX_SPLIT = 16  # versions one alias may split between
MAX_WEIGHT = 1_000_000
ROUTING_KEY = "X-Kiln-Routing-Key"  # the request header that makes a pick sticky
SERVED_VERSION = "X-Kiln-Model-Version"  # the response header naming the version that answered
_draws = random.Random()


def rollout_of(*, version: int | None, versions: list[tuple[int, int]] | None, mirror: int | None) -> tuple[Rollout, dict[int, str]]:
    """A checked rollout from a request's `version` or weighted `versions` (in its order), and `mirror`; with the request
    field that names each version, for errors about them."""
    if (version is None) == (versions is None):
        both = version is not None
        raise InvalidInput('send either "version" or "versions", not both' if both else
                           'expected {"version": N}, or {"versions": [{"version": N, "weight": W}, ...]} to split by weight',
                           field="versions" if both else "version")  # fmt: skip
    weights = [(version, 100)] if version is not None else versions or []
    if not 1 <= len(weights) <= MAX_SPLIT:
        raise InvalidInput(f"versions: expected 1 to {MAX_SPLIT} versions, got {len(weights)}", field="versions")
    fields: dict[int, str] = {}
    for index, (number, weight) in enumerate(weights):
        field = "version" if version is not None else f"versions[{index}]"
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
            raise InvalidInput(f"{field}.weight: expected a whole number from 1 to {MAX_WEIGHT:,} (weights are relative)",
                               field=f"{field}.weight")  # fmt: skip
        if number in fields:
            raise InvalidInput(f"{field}.version: version {number} is listed twice", field=f"{field}.version")
        fields[number] = field if version is not None else f"{field}.version"
    if mirror is not None and mirror in fields:
        raise InvalidInput(f"mirror: version {mirror} already serves this alias ({fields[mirror]}); a mirror must be another "
                           "version, whose answers nobody waits for", field="mirror")  # fmt: skip
    return Rollout(tuple(sorted(weights)), mirror), fields


def rollout_versions(name: str, rollout: Rollout, *, fields: dict[int, str], uow_factory: UowFactory) -> list[ModelVersion]:
    """The versions a rollout names (the mirror last), or NotFound naming the request field of the first missing one."""
    with uow_factory() as uow:
        return _named_versions(uow, name, rollout, fields)


def set_rollout(name: str, alias: str, rollout: Rollout, *, fields: dict[int, str], uow_factory: UowFactory) -> None:
    """Point `alias` at the rollout's versions and mirror (creating it, or replacing what it had), once each exists."""
    with uow_factory() as uow:
        named = _named_versions(uow, name, rollout, fields)
        _same_inputs(named[: len(rollout.weights)], fields)
        uow.models.set_rollout(name, alias, rollout)
        uow.commit()


def _same_inputs(versions: list[ModelVersion], fields: dict[int, str]) -> None:
    """A split's versions answer the same callers, so they must take the same inputs (names, dtypes, shapes); a version
    that did not would fail its share of requests. The mirror may differ: its failures cost nobody anything."""
    first = versions[0]
    for other in versions[1:]:
        if (other.signature or {}).get("inputs") != (first.signature or {}).get("inputs"):
            raise InvalidInput(f"{fields[other.version]}: version {other.version} takes other inputs than version {first.version} "
                               f"({_inputs(other)} against {_inputs(first)}); a split's versions must take the same inputs",
                               field=fields[other.version])  # fmt: skip


def _inputs(version: ModelVersion) -> str:
    inputs = (version.signature or {}).get("inputs") or []
    return ", ".join(f"{t['name']} {t['dtype']}{list(t['shape'])}" for t in inputs) or "none"


def _named_versions(uow: UnitOfWork, name: str, rollout: Rollout, fields: dict[int, str]) -> list[ModelVersion]:
    numbers = [number for number, _ in rollout.weights] + ([rollout.mirror] if rollout.mirror is not None else [])
    found = []
    for number in numbers:
        try:
            found.append(resolve_in(uow, name, version=number))
        except NotFound as missing:
            field = fields.get(number, "mirror") if missing.field == "version" else missing.field
            raise NotFound(f"{field}: {missing.message}" if field != missing.field else missing.message, field=field) from None
    return found


def model_rollouts(name: str, *, uow_factory: UowFactory) -> dict[str, Rollout]:
    """Every alias of `name` with its versions, weights and mirror."""
    with uow_factory() as uow:
        return uow.models.rollouts(name)


def read_rollout(name: str, alias: str, *, uow_factory: UowFactory) -> Rollout:
    """The alias's versions, weights and mirror; NotFound naming the model or the alias."""
    with uow_factory() as uow:
        found = uow.models.alias_rollout(name, alias)
        if found is None:
            raise NotFound(f"model '{name}' has no alias '{alias}'" if uow.models.exists(name) else f"no model named '{name}'",
                           field="alias" if uow.models.exists(name) else "name")  # fmt: skip
        return found


@dataclass(frozen=True)
class Target:
    """What one predict call may be served by: its versions with cumulative weights, and the mirror of its alias."""

    versions: tuple[ModelVersion, ...]
    bounds: tuple[int, ...]  # versions[i] serves the points in [bounds[i - 1], bounds[i]) of [0, bounds[-1])
    primary: ModelVersion
    mirror: ModelVersion | None = None

    @classmethod
    def single(cls, version: ModelVersion, mirror: ModelVersion | None = None) -> Target:
        return cls((version,), (1,), version, mirror)

    def pick(self, routing_key: str | None = None) -> ModelVersion:
        """The version for one request: by the routing key's hash when it has one, else at random, by weight."""
        if len(self.versions) == 1:
            return self.versions[0]
        total = self.bounds[-1]
        point = _draws.randrange(total) if routing_key is None else sticky_point(routing_key, total)
        return self.versions[bisect.bisect_right(self.bounds, point)]


def sticky_point(routing_key: str, total: int) -> int:
    """A point of [0, total) that depends only on the key: the first 64 bits of its SHA-256 scaled to the total (Python's
    hash() is salted per process, so replicas would disagree). The same fraction of the range for any total, so 9:1 and
    90:10 place every key alike."""
    digest = hashlib.sha256(routing_key.encode("utf-8", "surrogatepass")).digest()
    return (int.from_bytes(digest[:8], "big") * total) >> 64


def resolve_target(name: str, *, version: int | None = None, alias: str | None = None, uow_factory: UowFactory) -> Target:
    """What a call names, with its split and mirror when it names an alias (or, by default, `production`) that has them."""
    with uow_factory() as uow:
        primary = resolve_in(uow, name, version=version, alias=alias)
        rollout = None if version is not None else uow.models.alias_rollout(name, alias or DEFAULT_ALIAS)
        if rollout is None:  # a version by number, or the latest of a model without `production`
            return Target.single(primary)
        mirror = resolve_in(uow, name, version=rollout.mirror) if rollout.mirror is not None else None
        if not rollout.split:
            return Target.single(primary, mirror)
        versions = tuple(primary if number == primary.version else resolve_in(uow, name, version=number) for number, _ in rollout.weights)
    bounds, total = [], 0
    for _, weight in rollout.weights:
        total += weight
        bounds.append(total)
    return Target(versions, tuple(bounds), primary, mirror)
