"""The contract between the round loop and a method (Flower's ``Strategy``): what a method is handed and what it
returns. A method never talks to the transport and never writes the coordinator's state; the server loop
(:mod:`coordinator.server`) alone sends tasks, gathers results and applies what the method returns.

Per run, the loop asks the method:

* ``setup(view)`` -> a :class:`SetupStep` (tasks to run before round 0: initial pruning at one client, SNIP's
  gradients at K clients) or None; then ``finish_setup(view, gathered)`` -> an :class:`Update`;
* per round: ``configure_round(view)`` -> the round's :class:`~prunefl_common.messages.TrainConfig`;
  ``aggregate_round(view, results, failures)`` -> an :class:`Update` with the new weights;
  ``importance_requests(view, results)`` -> clients the loop sends an IMPORTANCE task this round (they trained
  earlier in the interval and hold importance; their answers are summed like the results'); ``reconfigure(view)``
  -> an :class:`Update` with new masks, or None.

The server sums the importance that results carry into the state (``view.importance``) before it asks for
``reconfigure``; a method that uses the sum says so with ``Update.reset_importance``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from prunefl_common.messages import TaskKind, TrainConfig, TrainResult
from prunefl_common.time_model import TimeModel

if TYPE_CHECKING:
    from coordinator.server import ServerConfig
    from coordinator.transport import ClientFailure, Gathered


@dataclass(frozen=True)
class RoundView:
    """What a method may read: the global model, the round, the configuration and the clients as announced.
    The arrays are the state's own: a method reads them and returns new ones, it does not write into them."""

    round: int
    weights: Sequence[np.ndarray]
    masks: Mapping[int, np.ndarray]
    mask_version: int
    importance: Sequence[np.ndarray] | None  # summed z of the current interval (None: none collected)
    kept_index: Mapping[int, np.ndarray]  # flat kept positions of each prunable weight under ``masks``
    weight_params: Sequence[int]
    shapes: Sequence[tuple[int, ...]]
    sizes: Mapping[int, int]
    num_classes: int
    config: ServerConfig
    time_model: TimeModel
    available: Sequence[str]
    client_info: Mapping[str, Mapping[str, Any]]
    extra: Mapping[str, Any]  # what methods stored with Update.extra (checkpointed)


@dataclass(frozen=True)
class SetupStep:
    """Tasks to run before round 0: to ``clients``, or to ``count`` clients the server selects (seeded)."""

    kind: TaskKind
    config: Any
    clients: Sequence[str] | None = None
    count: int | None = None
    deadline: bool = True  # False: wait without the round deadline (initial pruning takes minutes) ...
    deadline_s: float | None = None  # ... or this step's own deadline, when set
    # clients to try, one at a time and in this order, when the step's answer is not usable (no answer by the
    # deadline, a failure, or finish_setup raising RuntimeError)
    fallbacks: Sequence[str] = ()


@dataclass
class Update:
    """What the server applies after a method step; None / empty fields change nothing."""

    weights: list[np.ndarray] | None = None
    masks: dict[int, np.ndarray] | None = None  # a new mask version
    reset_importance: bool = False  # the importance sum was used: start a new one
    sim_time_s: float = 0.0  # simulated time the step cost (added to the state's clock)
    extra: dict[str, Any] = field(default_factory=dict)  # merged into the state's extra (checkpointed)
    forget_masks: Sequence[str] = ()  # clients whose mask version is unknown now (they get the full mask next)
    record: dict[str, Any] | None = None  # a metrics record to emit (after evaluating the model when ``evaluate``)
    evaluate: bool = False


class Method(Protocol):
    name: str

    def setup(self, view: RoundView) -> SetupStep | None: ...

    def finish_setup(self, view: RoundView, gathered: Gathered | None) -> Update:
        """RuntimeError when the answers are not usable: the server then tries the step's next fallback client."""
        ...

    def configure_round(self, view: RoundView) -> TrainConfig: ...

    def aggregate_round(self, view: RoundView, results: list[TrainResult], failures: list[ClientFailure]) -> Update:
        ...

    def importance_requests(self, view: RoundView, results: list[TrainResult]) -> Sequence[str]: ...

    def reconfigure(self, view: RoundView) -> Update | None: ...
