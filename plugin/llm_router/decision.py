"""What the router decides for one request."""
from __future__ import annotations

from dataclasses import dataclass

from llm_router.catalog import Model
from llm_router.classify.base import Classification


# Values made per request are plain (not frozen) slotted dataclasses: a frozen dataclass's
# __init__ costs about 3 us instead of 0.5 us, and a decision creates several of them.
@dataclass(slots=True, init=False)
class Decision:
    """Primary model, the fallback chain, the estimated cost and why."""

    model: Model
    fallbacks: tuple[Model, ...]
    classification: Classification
    policy: str
    strategy: str
    estimated_cost: float  # USD for the primary model, from the input estimate and expected output
    input_tokens: int
    expected_output_tokens: int
    selection: str  # the strategy's reason
    mode: str = "fallback"  # "fallback": try the chain on failure; "cascade": escalate on a weak answer
    propensity: float | None = None  # with policy explore on: the chance this request was sent to `model`
    shadow: Model | None = None  # shadow policies: the model routing would have chosen (`model` is the one served)

    def __init__(self, model: Model, fallbacks: tuple[Model, ...], classification: Classification, policy: str, strategy: str,
                 estimated_cost: float, input_tokens: int, expected_output_tokens: int, selection: str, mode: str = "fallback",
                 propensity: float | None = None, shadow: Model | None = None) -> None:
        # written out (init=False) so that mypyc compiles it: dataclass-made __init__s stay interpreted
        self.model = model
        self.fallbacks = fallbacks
        self.classification = classification
        self.policy = policy
        self.strategy = strategy
        self.estimated_cost = estimated_cost
        self.input_tokens = input_tokens
        self.expected_output_tokens = expected_output_tokens
        self.selection = selection
        self.mode = mode
        self.propensity = propensity
        self.shadow = shadow

    @property
    def reason(self) -> str:
        """Why: what the classifier said and how the strategy chose (built on demand)."""
        return f"{self.classification.describe()} | {self.selection}"

    @property
    def chain(self) -> tuple[Model, ...]:
        """Primary model followed by its fallbacks."""
        return (self.model, *self.fallbacks)


@dataclass(slots=True)
class RouteError:
    """The router refuses a request: an HTTP status and an OpenAI-style error."""

    status: int
    message: str
    code: str = "invalid_request_error"
    field: str | None = None

    def openai_body(self) -> dict:
        """The error in OpenAI's JSON error format."""
        etype = "invalid_request_error" if self.status < 500 else "server_error"
        if self.status == 429:
            etype = "rate_limit_error"
        return {"error": {"message": self.message, "type": etype, "param": self.field, "code": self.code}}
