"""Learning rotated project keys: a unit signed by a key the client has not pinned makes
it fetch ``/project`` once and pin the keys that a key it already trusts endorses.

The pinned keys (from attach time) stay the root of trust: a key is learned only through
an endorsement chain that starts at one of them, so a server (or a man in the middle)
cannot introduce a key of its own. Learned keys are saved to the attachment, so they
survive a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from yadml_common.signing import WorkVerifier
from yadml_common.wire import WorkUnitAssignment

from ..api import ServerAPI
from ..errors import PermanentError, TransientError
from ..state import StateDir

__all__ = ["KeyLearner"]

log = logging.getLogger(__name__)


class KeyLearner:
    """Pins rotated project keys into ``verifier`` (and the attachment in ``state``)."""

    def __init__(self, *, api: ServerAPI, verifier: WorkVerifier, state: StateDir) -> None:
        self._api = api
        self._verifier = verifier
        self._state = state

    async def learn_for(self, units: Sequence[WorkUnitAssignment]) -> None:
        """Pin endorsed rotated keys if one of ``units`` is signed by an unknown key.

        A failure to fetch the keys is only logged: the units it concerns are then
        refused by the signature check, which is the safe outcome.
        """
        unknown = {
            u.signature.key_fingerprint
            for u in units
            if u.signature is not None and not self._verifier.knows(u.signature.key_fingerprint)
        }
        if not unknown:
            return
        try:
            info = await self._api.project()
        except (TransientError, PermanentError) as exc:
            log.warning("could not fetch the project keys: %s", exc)
            return
        learned: list[str] = []
        for _ in info.public_keys:  # endorsements may chain: repeat until nothing changes
            before = len(self._verifier.keys)
            for entry in info.public_keys:
                if not self._verifier.knows(entry.fingerprint) and self._verifier.learn(entry):
                    learned.append(entry.public_key)
                    log.warning("pinned the rotated project key %s", entry.fingerprint)
            if len(self._verifier.keys) == before:
                break
        attachment = self._state.load_attachment()
        if learned and attachment is not None:
            keys = list(dict.fromkeys([*attachment.project_keys, *learned]))
            self._state.save_attachment(attachment.model_copy(update={"project_keys": keys}))
