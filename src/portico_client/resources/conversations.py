"""Conversations: the server keeps the history; post only the new message (``client.conversations.messages``)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Literal, Unpack, overload

from portico_client._base_client import Call, StreamCall, get, parse_model, post, split_options
from portico_client._params import ConversationCreateParams, MessageCreateParams, OrderedListParams
from portico_client._streaming import AsyncStream, ChunkReader, Stream
from portico_client.resources._resource import ClientT, Resource
from portico_client.types import ChatCompletionChunk, Conversation, ConversationMessage, Deleted, Page, Turn

if TYPE_CHECKING:
    from portico_client._client import AsyncPortico, Portico


class Messages(Resource[ClientT]):
    @overload
    def create(
        self: Messages[Portico],
        conversation_id: str,
        *,
        stream: Literal[False] = False,
        **params: Unpack[MessageCreateParams],
    ) -> Turn: ...
    @overload
    def create(
        self: Messages[Portico], conversation_id: str, *, stream: Literal[True], **params: Unpack[MessageCreateParams]
    ) -> Stream[ChatCompletionChunk]: ...
    @overload
    def create(
        self: Messages[AsyncPortico],
        conversation_id: str,
        *,
        stream: Literal[False] = False,
        **params: Unpack[MessageCreateParams],
    ) -> Awaitable[Turn]: ...
    @overload
    def create(
        self: Messages[AsyncPortico],
        conversation_id: str,
        *,
        stream: Literal[True],
        **params: Unpack[MessageCreateParams],
    ) -> Awaitable[AsyncStream[ChatCompletionChunk]]: ...
    def create(self, conversation_id: str, *, stream: bool = False, **params: Any) -> Any:
        """Post the user's message and get the answer. Streamed, the chunks end with one carrying the turn's
        ``usage``, ``message_id``, ``user_message_id`` and ``context`` (also as ``stream.usage``)."""
        path = f"conversations/{conversation_id}/messages"
        if not stream:
            return self._client._request(post(path, params, Turn))
        fields, options = split_options(params)
        call = StreamCall(
            method="POST",
            path=path,
            body={**fields, "stream": True},
            options=options,
            reader=lambda: ChunkReader(ChatCompletionChunk),
        )
        return self._client._stream(call)

    @overload
    def list(
        self: Messages[Portico], conversation_id: str, **params: Unpack[OrderedListParams]
    ) -> Page[ConversationMessage]: ...
    @overload
    def list(
        self: Messages[AsyncPortico], conversation_id: str, **params: Unpack[OrderedListParams]
    ) -> Awaitable[Page[ConversationMessage]]: ...
    def list(self, conversation_id: str, **params: Any) -> Any:
        """The history, oldest first, with messages no longer in the model's context (``in_context``)."""
        path = f"conversations/{conversation_id}/messages"
        return self._client._request(get(path, Page[ConversationMessage], params))


class Conversations(Resource[ClientT]):
    def __init__(self, client: ClientT) -> None:
        super().__init__(client)
        self.messages = Messages(client)

    @overload
    def create(self: Conversations[Portico], **params: Unpack[ConversationCreateParams]) -> Conversation: ...
    @overload
    def create(
        self: Conversations[AsyncPortico], **params: Unpack[ConversationCreateParams]
    ) -> Awaitable[Conversation]: ...
    def create(self, **params: Any) -> Any:
        return self._client._request(post("conversations", params, Conversation))

    @overload
    def get(self: Conversations[Portico], conversation_id: str) -> Conversation: ...
    @overload
    def get(self: Conversations[AsyncPortico], conversation_id: str) -> Awaitable[Conversation]: ...
    def get(self, conversation_id: str) -> Any:
        """The conversation with its token and cost totals."""
        return self._client._request(get(f"conversations/{conversation_id}", Conversation))

    @overload
    def list(self: Conversations[Portico], **params: Unpack[OrderedListParams]) -> Page[Conversation]: ...
    @overload
    def list(
        self: Conversations[AsyncPortico], **params: Unpack[OrderedListParams]
    ) -> Awaitable[Page[Conversation]]: ...
    def list(self, **params: Any) -> Any:
        return self._client._request(get("conversations", Page[Conversation], params))

    @overload
    def delete(self: Conversations[Portico], conversation_id: str) -> Deleted: ...
    @overload
    def delete(self: Conversations[AsyncPortico], conversation_id: str) -> Awaitable[Deleted]: ...
    def delete(self, conversation_id: str) -> Any:
        path = f"conversations/{conversation_id}"
        return self._client._request(Call(method="DELETE", path=path, parse=parse_model(Deleted)))
