"""Bench only: the collector's app exactly as ``monitor serve`` builds and runs it (settings from
``MONITOR_*``, monitor.serving.uvicorn_config: uvloop + httptools), plus ``GET /bench/constant``,
the constant-returning endpoint that bench/api_load.py compares the reputation API with. The
scoring job is off: the benchmark seeds its runs, and none may land during the measurement.

    .venv/bin/python bench/api_server.py
"""

from __future__ import annotations

import uvicorn

from monitor.app import create_app
from monitor.db.migrate import require_head
from monitor.serving import uvicorn_config
from monitor.settings import Settings


def main() -> None:
    settings = Settings()
    require_head(settings.database_url)
    app = create_app(settings, scoring=False)

    @app.get("/bench/constant", include_in_schema=False)
    async def constant() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.Server(uvicorn_config(app, settings.host, settings.port, lifespan="on")).run()


if __name__ == "__main__":
    main()
