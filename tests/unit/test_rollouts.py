"""Weighted aliases without services: checking a rollout, picking a version, sticky keys, and the use cases on the fake."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from services.errors import InvalidInput, NotFound
from services.registry.entities import NewVersion, Rollout
from services.usecases.rollouts import read_rollout, resolve_target, rollout_of, set_rollout, sticky_point
from tests.fakes import FakeRegistry


def test_a_rollout_is_sorted_by_version_and_names_each_versions_field() -> None:
    rollout, fields = rollout_of(version=None, versions=[(4, 10), (3, 90)], mirror=5)
    assert rollout == Rollout(((3, 90), (4, 10)), mirror=5) and rollout.primary == 3
    assert fields == {4: "versions[0].version", 3: "versions[1].version"}
    single, fields = rollout_of(version=7, versions=None, mirror=None)
    assert single == Rollout.single(7) and not single.split and fields == {7: "version"}


@pytest.mark.parametrize(
    ("version", "versions", "mirror", "field"),
    [
        (None, [(1, 0)], None, "versions[0].weight"),
        (None, [(1, 1), (2, True)], None, "versions[1].weight"),
        (None, [(1, 1), (1, 2)], None, "versions[1].version"),
        (None, [], None, "versions"),
        (None, [(v, 1) for v in range(1, 18)], None, "versions"),
        (None, [(1, 1), (2, 1)], 2, "mirror"),
        (3, None, 3, "mirror"),
        (3, [(1, 1)], None, "versions"),
        (None, None, 4, "version"),
    ],
)
def test_a_bad_rollout_names_its_field(version: int | None, versions: list | None, mirror: int | None, field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        rollout_of(version=version, versions=versions, mirror=mirror)
    assert raised.value.field == field


def test_the_heaviest_version_is_primary_and_the_lowest_number_among_equals() -> None:
    assert Rollout(((1, 10), (2, 90))).primary == 2
    assert Rollout(((5, 1), (6, 1))).primary == 5


def test_a_sticky_point_is_sha256_scaled_to_the_total_so_shares_not_numbers_place_a_key() -> None:
    expected = int.from_bytes(hashlib.sha256(b"customer-42").digest()[:8], "big") * 100 >> 64
    assert sticky_point("customer-42", 100) == expected
    for i in range(500):
        key = f"k{i}"
        assert (sticky_point(key, 10) < 9) == (sticky_point(key, 100) < 90)
        assert 0 <= sticky_point(key, 7) < 7


@pytest.fixture
def registry() -> FakeRegistry:
    found = FakeRegistry()
    with found.uow_factory() as uow:
        for i in range(4):
            uow.models.add_version(NewVersion("m", None, f"{i:064d}", 1, {}, {}, {}, {}, {}))
        uow.commit()
    return found


def test_a_split_target_picks_by_weight_and_a_key_sticks(registry: FakeRegistry) -> None:
    rollout, fields = rollout_of(version=None, versions=[(1, 3), (2, 1)], mirror=4)
    set_rollout("m", "production", rollout, fields=fields, uow_factory=registry.uow_factory)
    target = resolve_target("m", uow_factory=registry.uow_factory)
    assert target.mirror is not None and target.mirror.version == 4 and target.primary.version == 1
    drawn = Counter(target.pick().version for _ in range(20_000))
    assert abs(drawn[1] / 20_000 - 0.75) < 0.02
    assert {target.pick("same").version for _ in range(50)} == {target.pick("same").version}
    assert read_rollout("m", "production", uow_factory=registry.uow_factory) == rollout


def test_a_rollout_naming_a_missing_version_moves_nothing_and_names_the_request_field(registry: FakeRegistry) -> None:
    for versions, mirror, field in (([(1, 1), (9, 1)], None, "versions[1].version"), ([(1, 1)], 9, "mirror")):
        rollout, fields = rollout_of(version=None, versions=versions, mirror=mirror)
        with pytest.raises(NotFound) as raised:
            set_rollout("m", "production", rollout, fields=fields, uow_factory=registry.uow_factory)
        assert raised.value.field == field
    with pytest.raises(NotFound):
        read_rollout("m", "production", uow_factory=registry.uow_factory)
