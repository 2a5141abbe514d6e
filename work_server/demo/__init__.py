"""One-command local demo: a work server, N volunteer clients, one training job.

``python -m work_server.demo [--dataset mnist] [--volunteers 4] [--rounds 5] ...`` starts the
server and the clients as separate processes (exactly as an operator and volunteers would),
submits a job through the operator API, shows its progress, prints the per-round metrics and
stops every process it started. It talks to them only through their CLIs and the HTTP API;
the only project import is :mod:`yadml_common.wire` for the JSON models.
"""

from __future__ import annotations

from work_server.demo.api import (
    get_hosts,
    get_job,
    get_server_status,
    submit_job,
)
from work_server.demo.cli import (
    build_parser,
    follow_job,
    main,
    parse_args,
    run_demo,
)
from work_server.demo.display import (
    COMPACT_HEADERS,
    FULL_HEADERS,
    format_round,
    metrics_table,
    report_dir,
    trust_table,
)
from work_server.demo.options import (
    DAEMON_INTERVAL_S,
    DATASETS,
    EXECUTORS,
    FINAL_STATES,
    HOST,
    MERGE_METHODS,
    POLL_INTERVAL_S,
    SPLIT_METHODS,
    STATE_MARKER,
    DemoError,
    DemoOptions,
    Terminated,
    attack_plan,
    build_job_spec,
    delay_bound,
    replication,
)
from work_server.demo.processes import (
    Child,
    Demo,
    child_env,
    client_attach_command,
    client_run_command,
    client_state_dir,
    pick_port,
    port_is_free,
    prepare_state_dir,
    server_command,
    start_child,
    stop_children,
)

__all__ = [
    "COMPACT_HEADERS",
    "DAEMON_INTERVAL_S",
    "DATASETS",
    "EXECUTORS",
    "FINAL_STATES",
    "FULL_HEADERS",
    "HOST",
    "MERGE_METHODS",
    "POLL_INTERVAL_S",
    "SPLIT_METHODS",
    "STATE_MARKER",
    "Child",
    "Demo",
    "DemoError",
    "DemoOptions",
    "Terminated",
    "attack_plan",
    "build_job_spec",
    "build_parser",
    "child_env",
    "client_attach_command",
    "client_run_command",
    "client_state_dir",
    "delay_bound",
    "follow_job",
    "format_round",
    "get_hosts",
    "get_job",
    "get_server_status",
    "main",
    "metrics_table",
    "parse_args",
    "pick_port",
    "port_is_free",
    "prepare_state_dir",
    "replication",
    "report_dir",
    "run_demo",
    "server_command",
    "start_child",
    "stop_children",
    "submit_job",
    "trust_table",
]
