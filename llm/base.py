"""The interface every model backend implements: a stream of Chunks, failures as ProviderError."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ToolCall:
    """A function the model asked to run: `arguments` is its JSON text as the model wrote it
    (possibly malformed: the tool step then fails and the model is told why)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Chunk:
    """One step of a reply: new text and/or reasoning, and on the last step the finish
    reason, usage, and the tool calls the model asked for (already assembled)."""

    text: str = ""
    finish_reason: str | None = None
    # {"prompt_tokens": int, "completion_tokens": int, "total_tokens": int} when known.
    usage: dict[str, Any] | None = None
    # False on the last step of a reply the server would not stream (it came in one piece).
    streamed: bool = True
    reasoning: str = ""  # the model's thinking, shown apart from the answer
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Attachment:
    """A file sent with a user message: an image (`data`, its bytes, of `type`) or a
    document the model reads as `text`. A history message carries them, in order, under
    "attachments"; each provider sends them in its API's own shape."""

    name: str
    type: str
    data: bytes = b""
    text: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def is_image(self) -> bool:
        return self.text is None and self.type.startswith("image/")

    def describe(self) -> str:
        """How a reply names it: "photo.png (image, 800×600)", "notes.pdf (PDF, 1,234
        characters)"."""
        return f"{self.name} ({self.details()})"

    def details(self) -> str:
        if self.is_image:
            size = f", {self.width}×{self.height}" if self.width and self.height else ""
            return f"image{size}"
        kind = "PDF" if self.type == "application/pdf" else "text"
        return f"{kind}, {len(self.text or ''):,} characters"

    def document(self) -> str:
        """A document as the text part the model reads before the prompt."""
        return f"File: {self.name}\n\n{self.text or '(no text could be read from it)'}"


CONTINUE_INSTRUCTION = ("Continue your previous reply exactly where it stopped. Do not repeat "
                        "anything already written and do not comment on the interruption.")


def continuation_request(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """For chat models without a native "go on": a history ending with a partial reply
    gets a user message asking to continue it."""
    if messages and messages[-1].get("role") == "assistant":
        return [*messages, {"role": "user", "content": CONTINUE_INSTRUCTION}]
    return messages


class ProviderError(Exception):
    """A model failure to show the user; `reason` is short, user-facing and never holds a secret."""

    def __init__(self, reason: str, *, retryable: bool = False,
                 retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickles only `args`; keep the keyword-only details across processes too.
        return (_rebuild_provider_error,
                (type(self), self.reason, self.retryable, self.retry_after, self.status))


def _rebuild_provider_error(cls: type[ProviderError], reason: str, retryable: bool,
                            retry_after: float | None, status: int | None) -> ProviderError:
    return cls(reason, retryable=retryable, retry_after=retry_after, status=status)


@runtime_checkable
class Provider(Protocol):
    """A model backend: `name` ("openai" | "azure" | "anthropic" | "demo"), `model` (sent
    upstream), `label` (shown)."""

    name: str
    model: str
    label: str

    def stream(self, messages: list[dict[str, Any]]) -> Iterator[Chunk]:
        """Stream the model's reply to `messages` as Chunks; every failure is a ProviderError.

        A provider that can call tools sets `supports_tools = True` and takes a keyword
        `tools` (OpenAI function schemas); its last Chunk then carries the `tool_calls` the
        model made, and `messages` may hold assistant messages with `tool_calls` and
        `{"role": "tool", "tool_call_id", "content"}` results (the OpenAI shape).
        Reasoning arrives as Chunks with non-empty `reasoning`.

        `messages` are {"role": "system" | "user" | "assistant", "content": str}, oldest
        first; a user message may also carry "attachments", a list of Attachment (images,
        and documents to read before its text).
        When the last one is an assistant message, it is a reply that stopped part way:
        the model is asked to go on from its last character (a provider that does this
        exactly, with no repeat and no missing space at the seam, sets
        `continues_exactly`; the engine joins the seam of the others).
        Returns a generator; nothing is sent upstream until it is first advanced.
        It yields a Chunk with non-empty `text` for every piece of the reply as it arrives,
        and ends with at least one Chunk carrying `finish_reason` and/or `usage`.

        Any failure of the model is raised as ProviderError with a short, human reason:
        an HTTP error status before the stream starts, a connect timeout, a read (idle)
        timeout, a dropped connection, an error event mid-stream, or a stream that ends
        without a finish reason (a cut-off reply is an error, never a complete one). Text
        yielded before the error stays valid. The reason never contains the API key, a
        stack trace or an object repr.

        Calling `.close()` on the generator closes the upstream HTTP response right away,
        so a cancelled reply stops being generated (and paid for).
        """
        ...
