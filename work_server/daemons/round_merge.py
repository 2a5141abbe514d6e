"""The round closer's blocking part (run in a worker thread): screen and merge a round's
canonical results with the job's merge policy, then evaluate the merged weights on the test
split. Reads blobs only; the database is written by the caller afterwards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

from work_server.blobs import BlobStore
from work_server.job_info import JobInfo
from work_server.job_spec import JobSpec
from work_server.merge import Update, get_policy, screen_updates
from work_server.ml.evaluate import Evaluation, evaluate
from work_server.ml.shards import decode_shard, decode_weights, encode_weights
from work_server.ml.updates import Weights, decode_result
from yadml_common.wire import UpdateEncoding


@dataclass(frozen=True)
class Canonical:
    """One work unit's canonical result as the merge sees it."""

    result_id: int
    sha256: str  # the result's output blob
    num_samples: int  # the work unit's, never the volunteer's report


@dataclass(frozen=True)
class Merged:
    weights: bytes  # the new global weights, encoded
    evaluation: Evaluation
    screened: list[tuple[int, str]]  # (result id, reason) of results left out by screening


class BlobUpdates(Sequence[Update]):
    """The round's updates, each decoded from its blob only when accessed: a streaming merge
    (FedAvg) holds one update at a time instead of all K."""

    def __init__(
        self,
        blobs: BlobStore,
        items: list[tuple[str, int]],
        *,
        base: Weights,
        encoding: UpdateEncoding = "fp32",
    ) -> None:
        self._blobs = blobs
        self._items = items
        self._base = base  # the round's input weights: what encoded deltas apply to
        self._encoding = encoding

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, i: int) -> Update: ...
    @overload
    def __getitem__(self, i: slice) -> list[Update]: ...
    def __getitem__(self, i: int | slice) -> Update | list[Update]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        sha, n = self._items[i]
        weights = decode_result(self._blobs.get(sha), self._base, self._encoding)
        return Update(weights=weights, num_samples=n)


def merge_and_evaluate(
    spec: JobSpec,
    info: JobInfo,
    previous_sha: str,
    canonical: Sequence[Canonical],
    blobs: BlobStore,
) -> Merged:
    """Screen (when ``merge.screen_norm_ratio`` is set) and merge the canonical results,
    evaluate the merged weights on the test split. Raises on a missing or corrupt blob and
    when screening leaves nothing to merge."""
    previous = decode_weights(blobs.get(previous_sha))
    updates: Sequence[Update] = BlobUpdates(
        blobs,
        [(c.sha256, c.num_samples) for c in canonical],
        base=previous,
        encoding=spec.update_encoding,
    )
    screened: list[tuple[int, str]] = []
    ratio = spec.merge.screen_norm_ratio
    if ratio is not None:
        kept, rejected = screen_updates(updates, previous, max_ratio=ratio)
        if not kept:
            raise ValueError("screening rejected every update")
        screened = [(canonical[i].result_id, reason) for i, reason in rejected]
        updates = [updates[i] for i in kept]
    merged = get_policy(spec.merge).merge(updates, previous)
    images, labels = decode_shard(blobs.get(info.test_sha256))
    evaluation = evaluate(spec.model, merged, images, labels, num_classes=info.num_classes)
    return Merged(weights=encode_weights(merged), evaluation=evaluation, screened=screened)
