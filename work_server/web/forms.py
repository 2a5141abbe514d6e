"""The job start form: its fields (generated from ``JobSpec``'s defaults and choices) and the
parsing of a posted form into a ``JobSpec`` with messages an operator can act on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from work_server.job_spec import JobSpec, ReplicationPolicy, SplitSpec
from work_server.merge import MERGE_METHODS, MERGE_SPECS, MergeSpecBase
from yadml_common.wire import RUNTIMES

BUILTIN_DATASETS: tuple[str, ...] = tuple(
    d for d in get_args(JobSpec.model_fields["dataset"].annotation) if d != "upload"
)
UPLOAD_PREFIX = "upload:"


@dataclass(frozen=True)
class Field:
    name: str  # form field name; ``section_key`` for nested specs
    label: str
    kind: str  # number | select | text
    default: Any
    choices: tuple[str, ...] = ()
    step: str = "any"
    help: str = ""
    optional: bool = False


LABELS: dict[str, str] = {
    "model": "Model",
    "shards": "Shards (work units per round)",
    "rounds": "Rounds (global epochs)",
    "local_epochs": "Local epochs",
    "lr": "Learning rate",
    "batch_size": "Batch size",
    "optimizer": "Optimizer",
    "seed": "Seed",
    "round_min_fraction": "Round minimum fraction",
    "round_timeout_s": "Round timeout (s)",
    "split_method": "Split method",
    "split_alpha": "Dirichlet alpha",
    "split_labels_per_shard": "Labels per shard",
    "merge_method": "Merge method",
    "rep_min_quorum": "Minimum quorum",
    "rep_target_nresults": "Target results",
    "rep_max_error_results": "Max error results",
    "rep_max_total_results": "Max total results",
    "rep_delay_bound_s": "Delay bound (s)",
    "rep_tolerance": "Replica tolerance",
}
#: JobSpec fields that are not plain form fields (own widgets or nested sections)
_NOT_GENERAL = {"dataset", "dataset_sha256", "split", "merge", "replication", "runtimes"}


def _widget(annotation: Any) -> tuple[str, tuple[str, ...], bool, str] | None:
    """(kind, choices, optional, step) of a field's type; None for types the form skips."""
    args = get_args(annotation)
    optional = type(None) in args
    if optional:
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            return None
        annotation = inner[0]
    if get_origin(annotation) is Literal:
        return "select", tuple(str(a) for a in get_args(annotation)), optional, ""
    if annotation is bool:
        return "select", ("true", "false"), optional, ""
    if annotation is int:
        return "number", (), optional, "1"
    if annotation is float:
        return "number", (), optional, "any"
    return None


def _fields_of(
    model: type[BaseModel], prefix: str, skip: frozenset[str] = frozenset()
) -> tuple[Field, ...]:
    """One form field per scalar field of ``model`` (new spec options appear by themselves)."""
    out = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        widget = _widget(info.annotation)
        if widget is None:
            continue
        kind, choices, optional, step = widget
        default = info.get_default(call_default_factory=True)
        if isinstance(default, bool):
            default = str(default).lower()
        key = f"{prefix}{name}"
        out.append(
            Field(
                key,
                LABELS.get(key, name.replace("_", " ").capitalize()),
                kind,
                "" if default is None else default,
                choices,
                step=step or "any",
                help=info.description or "",
                optional=optional,
            )
        )
    return tuple(out)


def _merge_fields() -> tuple[Field, ...]:
    """The method select, then every policy's own options (their help names the methods they
    apply to), then the options of any method: the union of specs as one flat section."""
    default = JobSpec.model_fields["merge"].get_default(call_default_factory=True)
    owners: dict[str, list[str]] = {}
    options: dict[str, Field] = {}
    for spec in MERGE_SPECS:
        for f in _fields_of(spec, "merge_", frozenset(MergeSpecBase.model_fields)):
            owners.setdefault(f.name, []).append(str(spec.model_fields["method"].default))
            options.setdefault(f.name, f)
    own = [replace(f, help=f"{', '.join(owners[f.name])}: {f.help}") for f in options.values()]
    common = _fields_of(MergeSpecBase, "merge_", frozenset({"method"}))
    method = Field("merge_method", LABELS["merge_method"], "select", default.method, MERGE_METHODS)
    return (method, *own, *common)


def _chosen_merge_options(merge: dict[str, Any]) -> dict[str, Any]:
    """The flat section posts every policy's options: keep those of the chosen method."""
    for spec in MERGE_SPECS:
        if spec.model_fields["method"].default == merge.get("method"):
            return {k: v for k, v in merge.items() if k in spec.model_fields}
    return merge


GENERAL = _fields_of(JobSpec, "", frozenset(_NOT_GENERAL))
SPLIT = _fields_of(SplitSpec, "split_")
MERGE = _merge_fields()
REPLICATION = _fields_of(ReplicationPolicy, "rep_")
SECTIONS: tuple[tuple[str, tuple[Field, ...]], ...] = (
    ("Training", GENERAL),
    ("Split", SPLIT),
    ("Merge", MERGE),
    ("Replication", REPLICATION),
)
ALL_RUNTIMES: tuple[str, ...] = tuple(RUNTIMES)


def defaults() -> dict[str, Any]:
    values: dict[str, Any] = {f.name: f.default for _, fs in SECTIONS for f in fs}
    values["dataset"] = "digits"
    values["runtimes"] = list(
        JobSpec.model_fields["runtimes"].get_default(call_default_factory=True)
    )
    return values


class FormError(ValueError):
    """The form does not make a valid job; ``messages`` are shown above the form."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def _label_of(loc: tuple[int | str, ...]) -> str:
    names = {f.name: f.label for _, fs in SECTIONS for f in fs}
    prefix = {"split": "split_", "merge": "merge_", "replication": "rep_"}
    if len(loc) >= 3 and loc[0] == "merge" and loc[1] in MERGE_METHODS:
        loc = (loc[0], *loc[2:])  # the union's tag: the option's own name follows
    if len(loc) >= 2 and str(loc[0]) in prefix:
        key = prefix[str(loc[0])] + str(loc[1])
    else:
        key = str(loc[0]) if loc else "form"
    return names.get(key, key.replace("_", " "))


def parse_job_form(form: Mapping[str, Any], runtimes: list[str]) -> JobSpec:
    """A ``JobSpec`` from the posted fields (empty optional fields take the defaults)."""
    data: dict[str, Any] = {"split": {}, "merge": {}, "replication": {}}
    dataset = str(form.get("dataset", ""))
    if dataset.startswith(UPLOAD_PREFIX):
        data["dataset"] = "upload"
        data["dataset_sha256"] = dataset[len(UPLOAD_PREFIX) :]
    else:
        data["dataset"] = dataset
    for _, fields in SECTIONS:
        for f in fields:
            raw = form.get(f.name)
            if raw is None or (isinstance(raw, str) and raw.strip() == ""):
                continue
            value = str(raw).strip()
            if f.name.startswith("split_"):
                data["split"][f.name[len("split_") :]] = value
            elif f.name.startswith("merge_"):
                data["merge"][f.name[len("merge_") :]] = value
            elif f.name.startswith("rep_"):
                data["replication"][f.name[len("rep_") :]] = value
            else:
                data[f.name] = value
    data["merge"] = _chosen_merge_options(data["merge"])
    data["runtimes"] = runtimes
    try:
        # lax mode: form strings become numbers
        return JobSpec.model_validate(data, strict=False)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            where = _label_of(tuple(err["loc"])) if err["loc"] else "form"
            messages.append(f"{where}: {err['msg']}")
        raise FormError(messages) from None
