"""The merge spec: one model per policy, told apart by ``method``, reading old flat JSON."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from work_server.job_spec import JobSpec
from work_server.merge import (
    MERGE_METHODS,
    MERGE_SPECS,
    Clipped,
    KrumSpec,
    MedianSpec,
    MultiKrumSpec,
    RegularizedSpec,
    SimpleAverageSpec,
    TrimmedMeanSpec,
    get_policy,
    parse_merge_spec,
)
from work_server.merge.spec import FLAT_SPEC_OPTIONS

#: a merge object as every job stored it before specs were split per policy
FLAT: dict[str, Any] = {
    "method": "simple_average",
    "trim_ratio": 0.1,
    "factor": 0.5,
    "byzantine_f": None,
    "multi_krum_m": None,
    "clip_norm": None,
    "screen_norm_ratio": None,
}


def test_every_policy_has_a_spec_named_by_its_method() -> None:
    assert MERGE_METHODS == (
        "simple_average", "median", "trimmed_mean", "regularized", "krum", "multi_krum"
    )  # fmt: skip
    for spec_type, method in zip(MERGE_SPECS, MERGE_METHODS, strict=True):
        spec = parse_merge_spec({"method": method})
        assert type(spec) is spec_type
        assert spec.method == method
        assert get_policy(spec).name == method


@pytest.mark.parametrize("method", MERGE_METHODS)
def test_old_flat_json_still_parses(method: str) -> None:
    flat = {**FLAT, "method": method, "trim_ratio": 0.2, "factor": 0.3, "byzantine_f": 1}
    spec = parse_merge_spec(flat)
    assert spec.method == method
    dumped = spec.model_dump()
    # the options of other policies are dropped, the spec's own are kept
    assert set(dumped) == set(type(spec).model_fields)
    assert {k: dumped[k] for k in dumped if k in FLAT_SPEC_OPTIONS} == {
        k: flat[k] for k in dumped if k in FLAT_SPEC_OPTIONS
    }
    stored = {"dataset": "digits", "merge": flat}
    assert JobSpec.model_validate(stored).merge == spec


def test_the_own_options_reach_the_policy() -> None:
    assert get_policy(TrimmedMeanSpec(trim_ratio=0.3)).trim_ratio == 0.3  # type: ignore[attr-defined]
    assert get_policy(RegularizedSpec(factor=0.25)).factor == 0.25  # type: ignore[attr-defined]
    assert repr(get_policy(KrumSpec(byzantine_f=2))) == "Krum(byzantine_f=2)"
    assert repr(get_policy(MultiKrumSpec(byzantine_f=1, multi_krum_m=3))) == (
        "MultiKrum(byzantine_f=1, m=3)"
    )
    clipped = get_policy(MedianSpec(clip_norm=2.0))
    assert isinstance(clipped, Clipped)
    assert repr(clipped.inner) == "Median()"


def test_a_missing_method_is_simple_average() -> None:
    assert parse_merge_spec({}) == SimpleAverageSpec()
    assert parse_merge_spec({"clip_norm": 1.5}) == SimpleAverageSpec(clip_norm=1.5)
    assert JobSpec(dataset="digits").merge == SimpleAverageSpec()
    assert JobSpec.model_validate({"dataset": "digits", "merge": {}}).merge == SimpleAverageSpec()


@pytest.mark.parametrize(
    "merge",
    [
        {"method": "average"},  # no such policy
        {"method": "median", "trim": 0.1},  # unknown key (not an old flat option)
        {"method": "trimmed_mean", "trim_ratio": 0.5},  # its own option is still checked
        {"method": "multi_krum", "multi_krum_m": 0},
        {"method": "krum", "byzantine_f": -1},
        {"method": "median", "screen_norm_ratio": 0.5},
        "median",
    ],
)
def test_bad_specs_are_rejected(merge: Any) -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"dataset": "digits", "merge": merge})


def test_new_json_names_only_the_chosen_policy_options() -> None:
    spec = JobSpec.model_validate({"dataset": "digits", "merge": {"method": "krum"}})
    assert spec.model_dump(mode="json")["merge"] == {
        "method": "krum",
        "clip_norm": None,
        "screen_norm_ratio": None,
        "byzantine_f": None,
    }
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


def test_schema_is_a_union_discriminated_by_method() -> None:
    schema = JobSpec.model_json_schema()
    merge = schema["properties"]["merge"]
    assert merge["discriminator"]["propertyName"] == "method"
    assert set(merge["discriminator"]["mapping"]) == set(MERGE_METHODS)
    assert len(merge["oneOf"]) == len(MERGE_METHODS)
    for spec_type in MERGE_SPECS:
        member = schema["$defs"][spec_type.__name__]
        assert member["required"] == ["method"]
        assert member["additionalProperties"] is False
    assert "trim_ratio" in schema["$defs"]["TrimmedMeanSpec"]["properties"]
    assert "trim_ratio" not in schema["$defs"]["MedianSpec"]["properties"]
