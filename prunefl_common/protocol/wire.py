"""The wire format between coordinator and edges (protocol version 1): the public names of the protocol.

Layers, bottom up (each imports only those below it):

* :mod:`~prunefl_common.protocol.fields` - limits, :class:`ProtocolError`, readers of JSON header fields;
* :mod:`~prunefl_common.protocol.positions` - index sets (masks, mask changes) as bitmaps or gaps, and their size;
* :mod:`~prunefl_common.protocol.envelope` - the checksummed prefix and the safetensors container: every size a
  peer declares is checked here before anything is allocated; CHUNK envelopes;
* :mod:`~prunefl_common.protocol.codec` - tasks, results, statuses and rejects to and from envelopes.

Decoding (:func:`decode`) raises :class:`ProtocolError` (and nothing else) for anything malformed, saying what is
wrong. Memory: about 2-3 x ``len(data)`` for values; at most about 80 x in the worst cases, which need masks: a full
mask at the budget (64 bytes of bool per body byte, plus 8 bytes of int64 index per delta-coded byte) or a
bitmap-coded mask change (8 bytes of bits + 64 bytes of int64 indices per bitmap byte). No pickle, no eval.
"""

from prunefl_common.protocol.codec import *  # noqa: F403
from prunefl_common.protocol.envelope import *  # noqa: F403
from prunefl_common.protocol.fields import *  # noqa: F403
from prunefl_common.protocol.positions import *  # noqa: F403
