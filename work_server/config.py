"""Server configuration: one frozen dataclass, built by the CLI or by tests.

Its defaults are the only copy: ``yadml-server serve`` takes every option's default from here
(``tests/work_server/test_cli.py`` checks that a bare ``serve`` builds the default config).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from work_server.ratelimit import Rate

#: ``yadml-server serve``'s state and report directories (the config itself requires both)
DEFAULT_STATE_DIR = Path("var")
DEFAULT_RUNS_DIR = Path("runs")


@dataclass(frozen=True, kw_only=True)
class DaemonIntervals:
    """Seconds between runs of each scheduler daemon (small in tests and the demo)."""

    transitioner: float = 2.0
    validator: float = 2.0
    #: the federated-learning daemons: round closer, work generator, job finisher (once one
    #: "aggregator"; the name stays that of ``--interval-aggregator``)
    aggregator: float = 2.0
    file_deleter: float = 300.0


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    state_dir: Path
    runs_dir: Path
    operator_token: str
    database_url: str | None = None  # default: SQLite in state_dir
    host: str = "127.0.0.1"
    port: int = 8080
    #: public base URL put into work units (blob and upload URLs); default http://host:port
    public_url: str | None = None
    data_dir: Path | None = None  # MNIST IDX files; default YADML_DATA_DIR or ../shared/data/mnist
    fashion_dir: Path | None = None  # default /usr/share/datasets/fashion-mnist
    max_running_jobs: int = 1
    intervals: DaemonIntervals = field(default_factory=DaemonIntervals)
    run_daemons: bool = True  # tests may drive run_once() by hand instead
    retry_after_s: float = 5.0  # told to clients when there is no work (the minimum)
    #: idle polls the whole fleet may send per second: retry_after_s grows with the number
    #: of active hosts to keep within it (``work_server.services.pacing``), up to max_retry_after_s
    idle_polls_per_s: float = 100.0
    max_retry_after_s: float = 600.0
    max_request_bytes: int = 64 * 1024 * 1024
    host_active_window_s: float = 3600.0
    blob_grace_s: float = 3600.0  # the file deleter keeps unreferenced blobs this long
    #: the worker image named (by digest) in docker work units: ``sha256:<id>`` or
    #: ``name@sha256:<digest>``; None: clients use the image of their own trainer version
    worker_image: str | None = None
    #: the VM image named in vm work units: ``yadml-vm@sha256:<raw disk sha256>`` from its
    #: manifest (images/vm); None: clients use the image of their own trainer version
    vm_image: str | None = None
    project_name: str = "YADML"
    #: serve HTTPS with this certificate chain and private key (PEM files)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: upload grants stay valid this long after the result's deadline (late uploads)
    upload_grant_grace_s: float = 86400.0
    #: token buckets (tokens per second, burst): registrations per client IP, work
    #: requests per client IP and per host. Generous: they stop floods, not volunteers.
    rate_register_per_ip: Rate = field(default_factory=lambda: Rate(1.0, 100.0))
    rate_work_per_ip: Rate = field(default_factory=lambda: Rate(50.0, 1000.0))
    rate_work_per_host: Rate = field(default_factory=lambda: Rate(5.0, 100.0))
    #: peers whose X-Forwarded-For is believed (a reverse proxy on the same machine)
    trusted_proxies: frozenset[str] = frozenset()
    #: web session cookie ``Secure`` flag: None = only when the request or public_url is https
    cookie_secure: bool | None = None
    web_session_ttl_s: float = 12 * 3600.0  # a web login lasts this long

    @property
    def blobs_dir(self) -> Path:
        return self.state_dir / "blobs"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.state_dir / 'yadml.db').resolve()}"

    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls_cert is not None else "http"
        return self.public_url or f"{scheme}://{self.host}:{self.port}"
