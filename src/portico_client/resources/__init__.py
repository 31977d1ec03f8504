"""The client's namespaces (``client.chat.completions``, ``client.jobs``, ...), each written once for both clients.

A method builds its ``Call`` (what to send and how to read the answer) and hands it to the client; overloads on
``self`` give the sync client's methods plain return types and the async client's awaitable ones.
"""
