"""Start-up: read the configuration, run one node until SIGTERM or SIGINT.

``spacesync`` with no arguments runs the server. With a command it administers the storage the
server uses (the same ``DATABASE_URL`` / ``STORAGE_PATH``) and exits:

    spacesync members set-role SPACE_ID USER_ID OWNER|STAFF|PARTICIPANT
    spacesync members list SPACE_ID
    spacesync members unban SPACE_ID USER_ID
    spacesync spotlight grant SPACE_ID USER_ID [--minutes N] [--by ID]
    spacesync spotlight revoke SPACE_ID USER_ID

A command prints one JSON object on stdout. A failure prints one JSON log line on stderr and
exits 2 for a bad configuration or a database without FlowSpace's tables (nothing will work
until someone fixes it), 1 for anything else (the database is down, an unknown user).

``spacesync check [--timeout SECONDS]`` tries every dependency the settings name (see
:mod:`spacesync.diagnostics`) and prints a table: exit code 0 when every required one answers,
1 when one does not, 2 for a bad configuration. ``spacesync --version`` prints the version.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from types import TracebackType

import orjson

from . import __version__
from .config import ConfigError, Settings, load_settings
from .diagnostics import DEFAULT_TIMEOUT as DEFAULT_CHECK_TIMEOUT
from .diagnostics import exit_code, render, run_checks, scrub, secret_values
from .integrations.exit_journal import JournalError
from .observability.logging import configure_logging, log
from .storage import SchemaError, Storage, StorageError, open_storage
from .storage.base import SPACE_ROLES

EXIT_CONFIG = 2


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    log.error("E6003", "Fatal error", exc=value.with_traceback(tb))


def _loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    exc = context.get("exception")
    message = str(context.get("message") or "Unhandled error in the event loop")
    log.error("E6003", message, exc=exc if isinstance(exc, BaseException) else None)


async def serve(settings: Settings) -> int:
    from .app import SpacesyncNode

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_exception_handler)
    try:
        node = SpacesyncNode(settings)
    except JournalError as exc:
        log.error("E6003", f"Invalid configuration: {exc}", no_alert=True)
        return EXIT_CONFIG
    try:
        await node.start()
    except SchemaError as exc:
        log.error("E6003", f"Storage schema: {exc}", no_alert=True, missing=exc.missing)
        await node.close()
        return EXIT_CONFIG
    except OSError as exc:
        log.error(
            "E6003",
            f"Cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            no_alert=True,
        )
        await node.close()
        return 1
    stop: asyncio.Future[str] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(
            sig, lambda s=sig: stop.done() or stop.set_result(signal.Signals(s).name)
        )
    signal_name = await stop
    try:
        await asyncio.wait_for(node.shutdown(signal_name), timeout=9.5)
    except TimeoutError:
        log.error("E6002", "Shutdown did not finish in time; exiting anyway", no_alert=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:
        return run_command(args)
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        configure_logging("info", os.environ.get("HOSTNAME") or "spacesync")
        log.error("E6003", f"Invalid configuration: {exc}", no_alert=True)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.hostname)
    sys.excepthook = _excepthook
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run  # type: ignore[assignment]
    try:
        return runner(serve(settings))
    except KeyboardInterrupt:
        return 0


# -- administration commands --------------------------------------------------------------------


class CommandError(Exception):
    """A command that cannot be carried out as asked (exit code 1)."""


def version() -> str:
    """The installed distribution's version, or the package's own when it is not installed."""
    try:
        return importlib.metadata.version("spacesync")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spacesync",
        description="Without a command: run the server. With one: administer its storage"
        " (DATABASE_URL, or the SQLite file at STORAGE_PATH), or check its dependencies.",
    )
    parser.add_argument("--version", action="version", version=f"spacesync {version()}")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    check = groups.add_parser(
        "check",
        help="try every dependency with the configured settings (exit 0: all required answer)",
    )
    check.add_argument(
        "--timeout",
        type=_check_timeout,
        default=DEFAULT_CHECK_TIMEOUT,
        help=f"seconds each check may take (default {DEFAULT_CHECK_TIMEOUT:g})",
    )

    members = groups.add_parser("members", help="roles and bans of a space's members")
    member_cmds = members.add_subparsers(dest="command", required=True, metavar="ACTION")
    set_role = member_cmds.add_parser("set-role", help="give a user a role in a space")
    set_role.add_argument("space_id")
    set_role.add_argument("user_id")
    set_role.add_argument("role", type=str.upper, choices=SPACE_ROLES)
    listing = member_cmds.add_parser("list", help="list a space's members")
    listing.add_argument("space_id")
    unban = member_cmds.add_parser("unban", help="lift a ban (or mute) of a user in a space")
    unban.add_argument("space_id")
    unban.add_argument("user_id")

    spotlight = groups.add_parser("spotlight", help="who may use the spotlight in a space")
    spot_cmds = spotlight.add_subparsers(dest="command", required=True, metavar="ACTION")
    grant = spot_cmds.add_parser("grant", help="let a user switch the spotlight on")
    grant.add_argument("space_id")
    grant.add_argument("user_id")
    grant.add_argument(
        "--minutes", type=_positive_minutes, default=None, help="expire after N minutes"
    )
    grant.add_argument("--by", default="spacesync-cli", help="recorded as the granter")
    revoke = spot_cmds.add_parser("revoke", help="take the spotlight right away")
    revoke.add_argument("space_id")
    revoke.add_argument("user_id")
    return parser


def _check_timeout(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 60:
        raise argparse.ArgumentTypeError(f"must be between 0.1 and 60 seconds, got {raw!r}")
    return value


def _positive_minutes(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= 525_600:
        raise argparse.ArgumentTypeError(f"must be a whole number of minutes, got {raw!r}")
    return int(raw)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _known_user_and_space(storage: Storage, space_id: str, user_id: str) -> None:
    """FlowSpace's foreign keys would refuse a row for an unknown user or space with an
    obscure message; say which one is unknown instead. SQLite learns both from the CLI."""
    if storage.kind != "postgres":
        return
    if not await storage.user_exists(user_id):
        raise CommandError(f"no user {user_id!r} in the database")
    if await storage.space_owner(space_id) is None:
        raise CommandError(f"no space {space_id!r} in the database")


async def _execute(storage: Storage, ns: argparse.Namespace) -> dict[str, object]:
    command = f"{ns.group} {ns.command}"
    if command == "members set-role":
        await _known_user_and_space(storage, ns.space_id, ns.user_id)
        member = await storage.set_role(ns.space_id, ns.user_id, ns.role)
        return {
            "spaceId": ns.space_id,
            "userId": ns.user_id,
            "role": member.role,
            "memberId": member.id,
        }
    if command == "members list":
        return {
            "spaceId": ns.space_id,
            "members": [
                {
                    "id": m.id,
                    "userId": m.user_id,
                    "guestSessionId": m.guest_session_id,
                    "displayName": m.display_name,
                    "role": m.role,
                    "restriction": m.restriction,
                    "restrictedUntil": _iso(m.restricted_until),
                }
                for m in await storage.list_members(ns.space_id)
            ],
        }
    if command == "members unban":
        previous = await storage.get_restriction(ns.space_id, user_id=ns.user_id)
        await storage.set_restriction(ns.space_id, "NONE", user_id=ns.user_id)
        return {
            "spaceId": ns.space_id,
            "userId": ns.user_id,
            "restriction": "NONE",
            "previous": previous.restriction if previous else None,
        }
    if command == "spotlight grant":
        await _known_user_and_space(storage, ns.space_id, ns.user_id)
        expires = (
            datetime.now(UTC) + timedelta(minutes=ns.minutes) if ns.minutes is not None else None
        )
        grant = await storage.grant_spotlight(
            ns.space_id, granted_by=ns.by, user_id=ns.user_id, expires_at=expires
        )
        return {
            "spaceId": ns.space_id,
            "userId": ns.user_id,
            "grantId": grant.id,
            "grantedBy": grant.granted_by,
            "expiresAt": _iso(grant.expires_at),
        }
    assert command == "spotlight revoke", command
    revoked = await storage.revoke_spotlight(ns.space_id, user_id=ns.user_id)
    return {"spaceId": ns.space_id, "userId": ns.user_id, "revoked": revoked}


async def _run_command(settings: Settings, ns: argparse.Namespace) -> dict[str, object]:
    storage = await open_storage(settings)
    try:
        return await _execute(storage, ns)
    finally:
        await storage.close()


def run_check(timeout: float) -> int:
    """``spacesync check``: the dependency table on stdout; 0, 1 or 2 (see the module)."""
    secrets = secret_values(os.environ)
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        configure_logging("info", os.environ.get("HOSTNAME") or "spacesync")
        message = scrub(str(exc), secrets)
        log.error("E6003", f"Invalid configuration: {message}", no_alert=True)
        return EXIT_CONFIG
    # the table is the output: only warnings and errors are logged (to stderr)
    configure_logging("warn", settings.hostname)
    results = asyncio.run(run_checks(settings, os.environ, timeout))
    sys.stdout.write(render(results, secrets))
    return exit_code(results)


def run_command(args: list[str]) -> int:
    """Run one administration command; its exit code."""
    ns = _parser().parse_args(args)
    if ns.group == "check":
        return run_check(ns.timeout)
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        configure_logging("info", os.environ.get("HOSTNAME") or "spacesync")
        log.error("E6003", f"Invalid configuration: {exc}", no_alert=True)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.hostname)
    try:
        result = asyncio.run(_run_command(settings, ns))
    except SchemaError as exc:
        log.error("E6003", f"Storage schema: {exc}", no_alert=True, missing=exc.missing)
        return EXIT_CONFIG
    except (StorageError, CommandError) as exc:
        log.error("E4005", f"{ns.group} {ns.command} failed: {exc}", no_alert=True)
        return 1
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
