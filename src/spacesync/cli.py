"""Start-up: read the configuration, run one node until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from types import TracebackType

from .config import ConfigError, Settings, load_settings
from .integrations.exit_journal import JournalError
from .observability.logging import configure_logging, log

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
