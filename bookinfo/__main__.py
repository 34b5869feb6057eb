"""Entry point: `python -m bookinfo --app books --version v2` (or APP/VERSION/PORT/HOST in the env).

Reads `config.Settings`, builds the app module's application and hands it to `server.serve`, on uvloop
when it is installed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence

from aiohttp import web

from bookinfo import books, config, gw, ratings, server, ui

FACTORIES: dict[str, Callable[..., web.Application]] = {
    "ui": ui.create_app,
    "gw": gw.create_app,
    "books": books.create_app,
    "ratings": ratings.create_app,
}


def main(argv: Sequence[str] | None = None) -> int:
    settings = config.from_args(argv)
    server.configure_logging(settings)
    app = FACTORIES[settings.app](settings)
    try:
        import uvloop
    except ImportError:
        asyncio.run(server.serve(app, settings))
    else:
        uvloop.run(server.serve(app, settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
