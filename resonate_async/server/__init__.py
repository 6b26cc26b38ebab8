"""A development server: the embedded engine behind the Resonate HTTP API.

``python -m resonate_async dev`` runs it. It speaks the same protocol as the Resonate server
(``POST /``, ``GET /poll/{group}/{id}``, ``/health``, ``/ready``), so workers and clients in
other processes can share one engine on a laptop or in tests. ``token=`` (``dev --token``,
or ``RESONATE_TOKEN``) makes every request and event stream carry a shared secret. It is not a
production server: production deployments use the Resonate server
(https://github.com/resonatehq/resonate).

Needs the ``server`` extra (uvicorn): ``pip install "resonate-async[server]"``.
"""

from resonate_async.server._app import MAX_BODY, DevApp
from resonate_async.server._serve import DevServer, ServerError

__all__ = ["MAX_BODY", "DevApp", "DevServer", "ServerError"]
