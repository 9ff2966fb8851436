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
bitmap-coded mask change (8 bytes of bits + 64 bytes of int64 indices per bitmap byte). With ``Limits.for_model``
(what the coordinator decodes results with) every mask, mask change, value vector and importance array is checked
against the model's shapes first: masks and indices are then also at most the model's (1 byte of bool + 8 bytes of
index per prunable weight), and a message that declares anything else costs about 3 x its size before it is
refused. No pickle, no eval.
"""

from prunefl_common.protocol.codec import *  # noqa: F403
from prunefl_common.protocol.envelope import *  # noqa: F403
from prunefl_common.protocol.fields import *  # noqa: F403
from prunefl_common.protocol.positions import *  # noqa: F403
