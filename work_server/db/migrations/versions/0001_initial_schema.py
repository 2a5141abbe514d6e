"""Initial schema: the tables of work_server/db/models.py as of issue 9.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25 17:10:01.110299
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blob",
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "daemonrun",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("last_run", sa.Float(), nullable=False),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "host",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("os", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("arch", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("cpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("runtimes", sa.JSON(), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_contact", sa.Float(), nullable=False),
        sa.Column("banned", sa.Boolean(), nullable=False),
        sa.Column("results_valid", sa.Integer(), nullable=False),
        sa.Column("results_invalid", sa.Integer(), nullable=False),
        sa.Column("results_error", sa.Integer(), nullable=False),
        sa.Column("consecutive_valid", sa.Integer(), nullable=False),
        sa.Column("credit", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_host_token_hash"), "host", ["token_hash"], unique=True)

    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("current_round", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("model_sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("report_path", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_job_state"), "job", ["state"], unique=False)

    op.create_table(
        "operator",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_login_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_operator_username"), "operator", ["username"], unique=True)

    op.create_table(
        "uploadeddataset",
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("num_train", sa.Integer(), nullable=False),
        sa.Column("num_test", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "hostruntimetrust",
        sa.Column("host_id", sa.Integer(), nullable=False),
        sa.Column("runtime", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("consecutive_valid", sa.Integer(), nullable=False),
        sa.Column("valid", sa.Integer(), nullable=False),
        sa.Column("invalid", sa.Integer(), nullable=False),
        sa.Column("error", sa.Integer(), nullable=False),
        sa.Column("daily_quota", sa.Integer(), nullable=False),
        sa.Column("max_daily_quota", sa.Integer(), nullable=False),
        sa.Column("quota_used_today", sa.Integer(), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"],
            ["host.id"],
        ),
        sa.PrimaryKeyConstraint("host_id", "runtime"),
    )
    op.create_table(
        "round",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("weights_sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("deadline", sa.Float(), nullable=False),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.Column("metrics", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("results_success", sa.Integer(), nullable=False),
        sa.Column("results_error", sa.Integer(), nullable=False),
        sa.Column("results_no_reply", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["job.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_round_job_id"), "round", ["job_id"], unique=False)
    op.create_index("ix_round_job_number", "round", ["job_id", "number"], unique=True)
    op.create_index(op.f("ix_round_state"), "round", ["state"], unique=False)

    op.create_table(
        "websession",
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("operator_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operator.id"],
        ),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index(op.f("ix_websession_expires_at"), "websession", ["expires_at"], unique=False)
    op.create_index(op.f("ix_websession_operator_id"), "websession", ["operator_id"], unique=False)

    op.create_table(
        "workunit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("shard_index", sa.Integer(), nullable=False),
        sa.Column("shard_sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("weights_sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("num_samples", sa.Integer(), nullable=False),
        sa.Column("task", sa.JSON(), nullable=False),
        sa.Column("runtimes", sa.JSON(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("min_quorum", sa.Integer(), nullable=False),
        sa.Column("target_nresults", sa.Integer(), nullable=False),
        sa.Column("max_error_results", sa.Integer(), nullable=False),
        sa.Column("max_total_results", sa.Integer(), nullable=False),
        sa.Column("delay_bound_s", sa.Float(), nullable=False),
        sa.Column("tolerance", sa.Float(), nullable=False),
        sa.Column("max_output_bytes", sa.Integer(), nullable=False),
        sa.Column("transition_time", sa.Float(), nullable=False),
        sa.Column("need_validate", sa.Boolean(), nullable=False),
        sa.Column("canonical_result_id", sa.Integer(), nullable=True),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("adaptive", sa.Boolean(), nullable=False),
        sa.Column("adaptive_quorum", sa.Integer(), nullable=False),
        sa.Column("trust_threshold", sa.Integer(), nullable=False),
        sa.Column("spot_check_rate", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["job.id"],
        ),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["round.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_workunit_job_id"), "workunit", ["job_id"], unique=False)
    op.create_index(op.f("ix_workunit_need_validate"), "workunit", ["need_validate"], unique=False)
    op.create_index(op.f("ix_workunit_round_id"), "workunit", ["round_id"], unique=False)
    op.create_index(op.f("ix_workunit_state"), "workunit", ["state"], unique=False)
    op.create_index("ix_wu_transition", "workunit", ["transition_time"], unique=False)

    op.create_table(
        "result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workunit_id", sa.Integer(), nullable=False),
        sa.Column("host_id", sa.Integer(), nullable=True),
        sa.Column("server_state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("validate_state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("runtime", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=True),
        sa.Column("deadline", sa.Float(), nullable=True),
        sa.Column("received_at", sa.Float(), nullable=True),
        sa.Column("output_sha256", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("output_size", sa.Integer(), nullable=True),
        sa.Column("report", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("fraction_done", sa.Float(), nullable=False),
        sa.Column("error_reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("error_detail", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_id"],
            ["host.id"],
        ),
        sa.ForeignKeyConstraint(
            ["workunit_id"],
            ["workunit.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_result_dispatch", "result", ["server_state", "workunit_id"], unique=False)
    op.create_index("ix_result_host_state", "result", ["host_id", "server_state"], unique=False)
    op.create_index(op.f("ix_result_workunit_id"), "result", ["workunit_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_result_workunit_id"), table_name="result")
    op.drop_index("ix_result_host_state", table_name="result")
    op.drop_index("ix_result_dispatch", table_name="result")

    op.drop_table("result")
    op.drop_index("ix_wu_transition", table_name="workunit")
    op.drop_index(op.f("ix_workunit_state"), table_name="workunit")
    op.drop_index(op.f("ix_workunit_round_id"), table_name="workunit")
    op.drop_index(op.f("ix_workunit_need_validate"), table_name="workunit")
    op.drop_index(op.f("ix_workunit_job_id"), table_name="workunit")

    op.drop_table("workunit")
    op.drop_index(op.f("ix_websession_operator_id"), table_name="websession")
    op.drop_index(op.f("ix_websession_expires_at"), table_name="websession")

    op.drop_table("websession")
    op.drop_index(op.f("ix_round_state"), table_name="round")
    op.drop_index("ix_round_job_number", table_name="round")
    op.drop_index(op.f("ix_round_job_id"), table_name="round")

    op.drop_table("round")
    op.drop_table("hostruntimetrust")
    op.drop_table("uploadeddataset")
    op.drop_index(op.f("ix_operator_username"), table_name="operator")

    op.drop_table("operator")
    op.drop_index(op.f("ix_job_state"), table_name="job")

    op.drop_table("job")
    op.drop_index(op.f("ix_host_token_hash"), table_name="host")

    op.drop_table("host")
    op.drop_table("daemonrun")
    op.drop_table("blob")
