"""`kiln-admin`: manage API keys on the registry that KILN_DATABASE_URL (or the embedded default) names.

kiln-admin create-key --scopes read,predict [--name NAME]   prints the new key on stdout, once
kiln-admin list-keys
kiln-admin revoke-key KEY_ID
"""

from __future__ import annotations

import argparse
import sys
import uuid

from sqlalchemy.exc import SQLAlchemyError

from services.config import Settings
from services.errors import KilnError
from services.registry.unit_of_work import connect_registry
from services.usecases.keys import SCOPES, create_key, list_keys, parse_scopes, revoke_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kiln-admin", description="Manage Kiln's API keys.")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-key", help="mint a key; its secret is printed once and never stored")
    create.add_argument("--scopes", required=True, help=f"comma-separated, from: {', '.join(SCOPES)} (admin implies all)")
    create.add_argument("--name", default="", help="what the key is for (shown in lists and in 403 messages)")
    commands.add_parser("list-keys", help="every key: id, name, scopes, created, revoked")
    revoke = commands.add_parser("revoke-key", help="stop a key from working (within KILN_AUTH_CACHE_S on running APIs)")
    revoke.add_argument("key_id", type=uuid.UUID)
    args = parser.parse_args(argv)

    settings = Settings()
    engine, uow_factory = connect_registry(settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    try:
        if args.command == "create-key":
            scopes = parse_scopes(args.scopes)
            key, token = create_key(name=args.name or f"{'+'.join(scopes)} key", scopes=scopes, uow_factory=uow_factory)
            print(f"created key {key.id} ({key.name}) with scopes {', '.join(key.scopes)}; it is shown only now:", file=sys.stderr)
            print(token)
        elif args.command == "list-keys":
            for key in list_keys(uow_factory=uow_factory):
                revoked = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
                print(f"{key.id}  kiln_{key.prefix}_...  {','.join(key.scopes):28s} {key.created_at:%Y-%m-%d %H:%M}  {revoked}  {key.name}")
        else:
            revoke_key(args.key_id, uow_factory=uow_factory)
            print(f"revoked {args.key_id}", file=sys.stderr)
    except KilnError as err:
        print(f"kiln-admin: {err.message}", file=sys.stderr)
        return 2
    except SQLAlchemyError as err:
        print(f"kiln-admin: cannot use the registry at {engine.url.render_as_string(hide_password=True)}: {type(err).__name__}: "
              f"{str(err).splitlines()[0]}. Is it reachable and migrated (make run migrates it)?", file=sys.stderr)  # fmt: skip
        return 2
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
