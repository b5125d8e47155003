"""Weighted aliases and mirrors in the registry, on both backends: SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from services.registry.db import make_engine
from services.registry.entities import NewVersion, Rollout
from services.registry.tables import ModelAliasRow, ModelAliasWeightRow, ModelRow, ModelVersionRow, utcnow
from services.registry.unit_of_work import connect_registry
from services.usecases.rollouts import resolve_target
from tests.conftest import migrate

SPLIT = Rollout(((3, 90), (4, 10)), mirror=5)


def _versions(uow_factory, n: int = 5) -> None:  # type: ignore[no-untyped-def]
    with uow_factory() as uow:
        for i in range(n):
            uow.models.add_version(NewVersion("m", None, f"{i:064d}", 1, {"inputs": [], "outputs": []}, {}, {}, {}, {}))
        uow.commit()


def test_a_split_alias_keeps_its_weights_and_mirror_and_reports_its_heaviest_version(uow_factory) -> None:
    _versions(uow_factory)
    with uow_factory() as uow:
        uow.models.set_rollout("m", "production", SPLIT)
        uow.models.set_alias("m", "staging", 2)
        uow.commit()
    with uow_factory() as uow:
        assert uow.models.alias_rollout("m", "production") == SPLIT
        assert uow.models.rollouts("m") == {"production": SPLIT, "staging": Rollout.single(2)}
        assert uow.models.aliases("m") == {"production": 3, "staging": 2}  # as before: one version per alias
        assert uow.models.alias_version("m", "production") == 3
        assert uow.models.alias_rollout("m", "nope") is None


def test_moving_a_split_alias_replaces_its_weights_and_deleting_it_removes_them(uow_factory) -> None:
    _versions(uow_factory)
    with uow_factory() as uow:
        uow.models.set_rollout("m", "production", SPLIT)
        uow.commit()
    with uow_factory() as uow:
        uow.models.set_rollout("m", "production", Rollout(((1, 1), (2, 3))))
        uow.commit()
    with uow_factory() as uow:
        assert uow.models.alias_rollout("m", "production") == Rollout(((1, 1), (2, 3)))
        assert uow.models.alias_version("m", "production") == 2
        uow.models.set_alias("m", "production", 5)  # a plain version ends the split and the mirror
        uow.commit()
    with uow_factory() as uow:
        assert uow.models.alias_rollout("m", "production") == Rollout.single(5)
        uow.models.set_rollout("m", "production", SPLIT)
        assert uow.models.delete_alias("m", "production")
        uow.commit()
    with uow_factory() as uow:
        assert uow.models.rollouts("m") == {}
        assert uow.models.session.scalars(select(ModelAliasWeightRow)).all() == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("rollout", [Rollout(((3, 50), (9, 50))), Rollout.single(3, mirror=9)])
def test_a_rollout_naming_a_version_that_does_not_exist_breaks_a_foreign_key(uow_factory, rollout: Rollout) -> None:
    _versions(uow_factory)
    with pytest.raises(IntegrityError), uow_factory() as uow:
        uow.models.set_rollout("m", "production", rollout)
        uow.commit()


def test_a_target_carries_every_weighted_version_and_the_mirror(uow_factory) -> None:
    _versions(uow_factory)
    with uow_factory() as uow:
        uow.models.set_rollout("m", "production", SPLIT)
        uow.commit()
    target = resolve_target("m", uow_factory=uow_factory)  # the default call follows `production`
    assert [v.version for v in target.versions] == [3, 4] and target.bounds == (90, 100)
    assert target.primary.version == 3 and target.mirror is not None and target.mirror.version == 5
    assert resolve_target("m", alias="production", uow_factory=uow_factory) == target
    pinned = resolve_target("m", version=4, uow_factory=uow_factory)  # a version by number has no split and no mirror
    assert pinned.versions == (pinned.primary,) and pinned.primary.version == 4 and pinned.mirror is None


def test_0013_keeps_every_alias_and_a_downgrade_keeps_a_split_alias_at_its_heaviest_version(database_url: str) -> None:
    migrate(database_url, "0012", down=True)
    engine = make_engine(database_url)
    with engine.begin() as conn:  # the columns 0012 has
        conn.execute(insert(ModelRow).values(id=1, name="m", created_at=utcnow()))
        for number in (1, 2, 3):
            conn.execute(insert(ModelVersionRow.__table__).values(
                model_id=1, version=number, job_id=None, artifact_sha256="a" * 64, artifact_size=1, signature={}, metrics={},
                spec={}, hyperparameters={}, dataset={}, created_at=utcnow()))  # fmt: skip
        conn.execute(insert(ModelAliasRow.__table__).values(model_id=1, alias="production", version=2, updated_at=utcnow()))
    engine.dispose()
    migrate(database_url)
    engine, uow_factory = connect_registry(database_url)
    with uow_factory() as uow:
        assert uow.models.rollouts("m") == {"production": Rollout.single(2)}
        uow.models.set_rollout("m", "production", Rollout(((1, 1), (3, 4)), mirror=2))
        uow.commit()
    engine.dispose()
    migrate(database_url, "0012", down=True)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(select(ModelAliasRow.__table__.c.alias, ModelAliasRow.__table__.c.version)).all() == [("production", 3)]
    engine.dispose()
    migrate(database_url)
