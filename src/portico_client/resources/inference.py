"""Chat completions, completions, embeddings, models and tokenize: the OpenAI-shaped endpoints."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Literal, Unpack, overload

from portico_client._base_client import Call, StreamCall, get, parse_model, post, split_options
from portico_client._params import ChatCompletionParams, CompletionParams, EmbeddingParams, TokenizeParams
from portico_client._streaming import AsyncStream, ChunkReader, Stream
from portico_client.resources._resource import ClientT, Resource
from portico_client.types import ChatCompletion, ChatCompletionChunk, Completion, EmbeddingList, Model, Page, TokenCount

if TYPE_CHECKING:
    from portico_client._client import AsyncPortico, Portico


def generation_calls(
    path: str, params: dict[str, Any], stream: bool, answer: type[ChatCompletion] | type[Completion]
) -> tuple[Call[Any], StreamCall[Any]]:
    fields, options = split_options(params)
    body = {**fields, "stream": stream}
    call = Call(method="POST", path=path, body=body, options=options, parse=parse_model(answer))
    chunk = ChatCompletionChunk if answer is ChatCompletion else Completion
    stream_call = StreamCall(method="POST", path=path, body=body, options=options, reader=lambda: ChunkReader(chunk))
    return call, stream_call


class ChatCompletions(Resource[ClientT]):
    @overload
    def create(
        self: ChatCompletions[Portico], *, stream: Literal[False] = False, **params: Unpack[ChatCompletionParams]
    ) -> ChatCompletion: ...
    @overload
    def create(
        self: ChatCompletions[Portico], *, stream: Literal[True], **params: Unpack[ChatCompletionParams]
    ) -> Stream[ChatCompletionChunk]: ...
    @overload
    def create(
        self: ChatCompletions[AsyncPortico], *, stream: Literal[False] = False, **params: Unpack[ChatCompletionParams]
    ) -> Awaitable[ChatCompletion]: ...
    @overload
    def create(
        self: ChatCompletions[AsyncPortico], *, stream: Literal[True], **params: Unpack[ChatCompletionParams]
    ) -> Awaitable[AsyncStream[ChatCompletionChunk]]: ...
    def create(self, *, stream: bool = False, **params: Any) -> Any:
        """A chat completion; with ``stream=True``, a stream of chunks (``stream.usage`` after the last one when
        ``stream_options={"include_usage": True}``)."""
        call, stream_call = generation_calls("chat/completions", params, stream, ChatCompletion)
        return self._client._stream(stream_call) if stream else self._client._request(call)


class Chat(Resource[ClientT]):
    def __init__(self, client: ClientT) -> None:
        super().__init__(client)
        self.completions = ChatCompletions(client)


class Completions(Resource[ClientT]):
    @overload
    def create(
        self: Completions[Portico], *, stream: Literal[False] = False, **params: Unpack[CompletionParams]
    ) -> Completion: ...
    @overload
    def create(
        self: Completions[Portico], *, stream: Literal[True], **params: Unpack[CompletionParams]
    ) -> Stream[Completion]: ...
    @overload
    def create(
        self: Completions[AsyncPortico], *, stream: Literal[False] = False, **params: Unpack[CompletionParams]
    ) -> Awaitable[Completion]: ...
    @overload
    def create(
        self: Completions[AsyncPortico], *, stream: Literal[True], **params: Unpack[CompletionParams]
    ) -> Awaitable[AsyncStream[Completion]]: ...
    def create(self, *, stream: bool = False, **params: Any) -> Any:
        call, stream_call = generation_calls("completions", params, stream, Completion)
        return self._client._stream(stream_call) if stream else self._client._request(call)


class Embeddings(Resource[ClientT]):
    @overload
    def create(self: Embeddings[Portico], **params: Unpack[EmbeddingParams]) -> EmbeddingList: ...
    @overload
    def create(self: Embeddings[AsyncPortico], **params: Unpack[EmbeddingParams]) -> Awaitable[EmbeddingList]: ...
    def create(self, **params: Any) -> Any:
        return self._client._request(post("embeddings", params, EmbeddingList))


class Models(Resource[ClientT]):
    @overload
    def list(self: Models[Portico]) -> Page[Model]: ...
    @overload
    def list(self: Models[AsyncPortico]) -> Awaitable[Page[Model]]: ...
    def list(self) -> Any:
        return self._client._request(get("models", Page[Model]))

    @overload
    def retrieve(self: Models[Portico], model: str) -> Model: ...
    @overload
    def retrieve(self: Models[AsyncPortico], model: str) -> Awaitable[Model]: ...
    def retrieve(self, model: str) -> Any:
        return self._client._request(get(f"models/{model}", Model))


class Tokenize(Resource[ClientT]):
    """``client.tokenize(model=..., prompt=...)`` or ``messages=[...]``: the prompt's token count."""

    @overload
    def __call__(self: Tokenize[Portico], **params: Unpack[TokenizeParams]) -> TokenCount: ...
    @overload
    def __call__(self: Tokenize[AsyncPortico], **params: Unpack[TokenizeParams]) -> Awaitable[TokenCount]: ...
    def __call__(self, **params: Any) -> Any:
        return self._client._request(post("tokenize", params, TokenCount))
