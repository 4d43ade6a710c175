"""Probe a running Noctis service's health endpoint: ``python -m noctis_common.healthcheck``.

Container images run this as their ``HEALTHCHECK`` because the slim base image has no
curl. It sends ``GET http://127.0.0.1:<port><path>`` and exits 0 on a 2xx response, 1 on
any other status, a refused connection or a timeout, with one line on stderr saying
which. The port defaults to ``NOCTIS_HTTP_PORT``; the standalone DIMSE gateway serves its
health endpoints on ``NOCTIS_METRICS_PORT`` instead (``--port-setting metrics_port``).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

from noctis_common.settings import Settings

PORT_SETTINGS = ("http_port", "metrics_port")


def probe_health(url: str, timeout_s: float) -> str | None:
    """Send ``GET url`` and return ``None`` on a 2xx status, otherwise why the probe failed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as error:
        return f"GET {url} returned HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return f"GET {url} failed: {reason}"
    if not 200 <= status < 300:
        return f"GET {url} returned HTTP {status}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m noctis_common.healthcheck",
        description="Exit 0 when the local service's health endpoint returns 2xx, else 1.",
    )
    parser.add_argument(
        "--path", default="/health/live", help="endpoint path (default: /health/live)"
    )
    parser.add_argument(
        "--port", type=int, help="TCP port on 127.0.0.1; default: the --port-setting value"
    )
    parser.add_argument(
        "--port-setting",
        choices=PORT_SETTINGS,
        default="http_port",
        help="setting that contains the port when --port is not given (default: http_port)",
    )
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for the response"
    )
    arguments = parser.parse_args(argv)

    port = arguments.port
    if port is None:
        port = int(getattr(Settings(), arguments.port_setting))
    if port == 0:
        print(
            f"cannot probe health: NOCTIS_{arguments.port_setting.upper()} is 0 (off); "
            "set it to the port the service serves its health endpoints on",
            file=sys.stderr,
        )
        return 1
    failure = probe_health(f"http://127.0.0.1:{port}{arguments.path}", arguments.timeout)
    if failure is not None:
        print(failure, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
