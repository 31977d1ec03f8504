"""Continuous batching over llama.cpp's multi-sequence decode: one loop, off the event loop.

Each step builds one ``llama_batch`` from (1) the next token of every sequence that is generating and
(2) chunks of prompts still being prefilled, within ``n_batch`` tokens, then decodes it once and samples
each sequence that asked for logits with its own sampler chain (temperature, top_p, penalties, seed, JSON
grammar). Requests join between steps and leave the step they finish or are cancelled.

Slots are llama.cpp sequence ids. A finished sequence's KV cells stay in its slot as a prefix cache: a new
prompt that begins with tokens cached in a free slot continues from them instead of recomputing them (and a
long prefix cached in another slot is copied over), which is what ``cached_tokens`` reports. ``n > 1``
prefills the prompt once and copies its cells into the other choices' slots.
"""

from __future__ import annotations

import codecs
import logging
import queue
import threading
from collections import deque
from typing import Any

import numpy as np

from portico.constants import FinishReason
from portico.engines.base import (
    EngineStats,
    Generation,
    GenerationRequest,
    Outbox,
    TokenLogprob,
)
from portico.engines.sampling import sampler_chain, token_logprob, token_text
from portico.engines.sequences import Choice, Entry, PromptPosition, Slot, Submitted, common_prefix
from portico.engines.stops import StopFilter
from portico.errors import EngineError
from portico.observability import metrics

logger = logging.getLogger("portico.engine")

# Prompt tokens a copy from another slot must save before it beats recomputing them (see _place).
COPY_MIN_GAIN = 256


class DecodeLoop:
    """Owns the llama.cpp context; every call into it happens on the loop's own thread."""

    def __init__(
        self,
        *,
        llama: Any,
        context: Any,
        slots: int,
        slot_context: int,
        n_batch: int,
        prefill_chunk: int,
        stats: EngineStats,
    ) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._llama_cpp: Any = llama_cpp
        self._internals: Any = _internals
        self._llama = llama
        self._vocab = llama._model.vocab
        self._n_vocab = llama.n_vocab()
        self._context = context
        self._memory = llama_cpp.llama_get_memory(context.ctx)
        self._slots = [Slot(seq_id) for seq_id in range(slots)]
        self._slot_context = slot_context
        self._n_batch = n_batch
        self._prefill_chunk = prefill_chunk
        self._batch: Any = _internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=False)
        self._stats = stats
        self._inbox: queue.SimpleQueue[Submitted | None] = queue.SimpleQueue()
        self._waiting: deque[Submitted] = deque()
        self._running: list[Submitted] = []
        self._steps = 0
        self.outbox = Outbox()
        self._thread = threading.Thread(target=self._run, name="llama-decode-loop", daemon=True)

    # -- control (any thread) ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, request: GenerationRequest, generation: Generation) -> None:
        """Queue a request; its ``n`` choices need ``n`` slots at once (the service caps ``n`` at the slots)."""
        self._inbox.put(Submitted(request, generation))

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join()
        self._batch.close()

    # -- the loop ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while self._receive(block=not (self._running or self._waiting)):
            try:
                self._step()
            except Exception as exc:  # a failed decode fails its requests, never the loop
                logger.exception("decode step failed")
                self._fail_running(exc)
            self.outbox.flush()
        self._abort_all()
        self.outbox.flush()

    def _receive(self, *, block: bool) -> bool:
        """Move submitted requests to the waiting line (blocking when idle); False once ``stop`` was called."""
        try:
            item = self._inbox.get(block=block)
            while item is not None:
                self._waiting.append(item)
                self._stats.active_generations += 1
                self._stats.generations_started += 1
                item = self._inbox.get_nowait()
            return False
        except queue.Empty:
            return True

    def _step(self) -> None:
        self._steps += 1
        self._drop_cancelled()
        self._admit()
        entries = self._plan()
        if entries:
            self._decode(entries)
            self._sample(entries)
        self._retire_finished()

    # -- admission: requests join between steps ------------------------------------------------------
    def _admit(self) -> None:
        while self._waiting:
            request = self._waiting[0]
            free = [slot for slot in self._slots if not slot.busy]
            if len(free) < request.request.n:
                return
            self._waiting.popleft()
            self._place(request, free)
            self._running.append(request)
            self._stats.busy_slots = sum(slot.busy for slot in self._slots)

    def _place(self, request: Submitted, free: list[Slot]) -> None:
        """Give the request its slots, reusing the longest cached prefix of its prompt.

        The free slot whose cache shares most with the prompt is reused in place. A longer prefix held by
        another slot is copied over only when it saves at least ``COPY_MIN_GAIN`` tokens: llama.cpp copies a
        whole KV stream across slots, which costs more than recomputing a short prefix.
        """
        prompt = request.prompt
        # The last prompt token is always decoded again: its logits give the first sampled token.
        # A request that scores its prompt needs every prompt position's logits: nothing is reused.
        usable = 0 if request.request.prompt_logprobs else len(prompt) - 1
        shared = {slot.seq_id: min(common_prefix(slot.cached, prompt), usable) for slot in self._slots}
        primary = max(free, key=lambda slot: (shared[slot.seq_id], -slot.last_used))
        source = max(self._slots, key=lambda slot: shared[slot.seq_id])
        reuse, better = shared[primary.seq_id], shared[source.seq_id]
        if source is not primary and better - reuse >= COPY_MIN_GAIN and usable:
            self._copy_sequence(source, primary, length=better)
            reuse = better
        else:
            self._forget(primary, keep=reuse)
        others = sorted((slot for slot in free if slot is not primary), key=lambda slot: slot.last_used)
        slots = [primary, *others[: request.request.n - 1]]
        for slot in slots[1:]:
            self._forget(slot, keep=0)
        request.generation.cached_tokens = reuse
        params = request.request.params
        for index, slot in enumerate(slots):
            slot.busy, slot.last_used = True, self._steps
            request.choices.append(
                Choice(
                    owner=request,
                    index=index,
                    slot=slot,
                    sampler=sampler_chain(self._internals, self._llama._model, self._n_vocab, params, index),
                    stops=StopFilter(params.stop),
                    decoder=codecs.getincrementaldecoder("utf-8")("replace"),
                )
            )

    def _copy_sequence(self, source: Slot, target: Slot, *, length: int | None = None) -> None:
        """Give ``target`` the KV cells of ``source`` (its first ``length`` tokens).

        Each slot is its own KV stream, and llama.cpp copies across streams only whole sequences: copy all,
        then trim the copy to the prefix.
        """
        self._llama_cpp.llama_memory_seq_cp(self._memory, source.seq_id, target.seq_id, -1, -1)
        target.cached = list(source.cached)
        if length is not None:
            self._forget(target, keep=length)

    def _forget(self, slot: Slot, *, keep: int) -> None:
        """Drop the slot's KV cells from position ``keep`` on."""
        if len(slot.cached) > keep:
            self._llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1)
            del slot.cached[keep:]

    # -- one step ------------------------------------------------------------------------------------
    def _plan(self) -> list[Entry]:
        """Generating sequences first (one token each), then prompt chunks in arrival order."""
        entries = [
            Entry(choice.next_token, len(choice.slot.cached), choice.slot.seq_id, True, choice)
            for request in self._running
            for choice in request.choices
            if choice.next_token is not None
        ]
        budget = self._n_batch - len(entries)
        for request in self._running:
            prompt, fed = request.prompt, request.fed
            if fed >= len(prompt) or budget <= 0:
                continue
            chunk = prompt[fed : fed + min(budget, self._prefill_chunk)]
            last = fed + len(chunk) == len(prompt)
            slot, scored = request.primary, request.request.prompt_logprobs
            for offset, token in enumerate(chunk):
                is_last = last and offset == len(chunk) - 1
                reader: Submitted | PromptPosition | None = request if is_last else None
                if scored and not is_last:
                    reader = PromptPosition(request, fed + offset)
                entries.append(Entry(token, fed + offset, slot.seq_id, reader is not None, reader))
            budget -= len(chunk)
        return entries

    def _decode(self, entries: list[Entry]) -> None:
        batch = self._batch.batch
        for i, entry in enumerate(entries):
            batch.token[i] = entry.token
            batch.pos[i] = entry.pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = entry.seq_id
            batch.logits[i] = entry.logits
        batch.n_tokens = len(entries)
        status = self._llama_cpp.llama_decode(self._context.ctx, batch)
        if status != 0:
            raise EngineError(f"llama_decode returned {status}")
        self._stats.last_batch_size = len(entries)
        metrics.observe_batch(len(entries))
        self._stats.prompt_tokens_decoded += sum(not isinstance(entry.reader, Choice) for entry in entries)
        for entry in entries:
            slot = self._slots[entry.seq_id]
            slot.cached.append(entry.token)
            if isinstance(entry.reader, Choice):
                entry.reader.next_token = None

    def _sample(self, entries: list[Entry]) -> None:
        for position, entry in enumerate(entries):
            if isinstance(entry.reader, Choice):
                self._advance(entry.reader, position)
            elif isinstance(entry.reader, PromptPosition):
                self._score_prompt(entry.reader, position)
            elif isinstance(entry.reader, Submitted):
                self._share_prompt(entry.reader)
                for choice in entry.reader.choices:
                    self._advance(choice, position)

    def _share_prompt(self, request: Submitted) -> None:
        """Copy the prefilled prompt's cells into every other choice's slot (the prompt is computed once)."""
        for choice in request.choices[1:]:
            self._copy_sequence(request.primary, choice.slot)

    def _score_prompt(self, at: PromptPosition, position: int) -> None:
        """The logprob of the prompt token after ``at.position``; the prompt's first token comes first, unscored."""
        prompt, generation = at.request.prompt, at.request.generation
        if at.position == 0:
            first = self._llama.detokenize([prompt[0]])
            generation.prompt_logprobs.append(TokenLogprob(token_text(first), None, tuple(first)))
        token = prompt[at.position + 1]
        top = at.request.request.params.logprobs or 0
        generation.prompt_logprobs.append(self._logprob(position, token, self._llama.detokenize([token]), top))

    def _advance(self, choice: Choice, position: int) -> None:
        if choice.owner.request.params.max_tokens == 0:  # only the prompt was wanted (scored, or echoed)
            self._end_choice(choice, FinishReason.LENGTH)
            return
        token = choice.sampler.sample(self._context, position)
        generation = choice.owner.generation
        if self._llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._end_choice(choice, FinishReason.STOP)
            return
        choice.produced += 1
        generation.completion_tokens += 1
        self._stats.tokens_generated += 1
        piece = self._llama.detokenize([token])
        if (top := choice.owner.request.params.logprobs) is not None:
            choice.pending.append(self._logprob(position, token, piece, top))
        if text := choice.stops.feed(choice.decoder.decode(piece)):
            generation.push(choice.index, text, tuple(choice.pending))
            choice.pending.clear()
        if choice.stops.stopped:
            self._end_choice(choice, FinishReason.STOP)
        elif choice.produced >= choice.owner.request.params.max_tokens or len(choice.slot.cached) >= self._slot_context:
            self._end_choice(choice, FinishReason.LENGTH)
        else:
            choice.next_token = token

    def _logprob(self, position: int, token: int, piece: bytes, top: int) -> TokenLogprob:
        logits = np.ctypeslib.as_array(
            self._llama_cpp.llama_get_logits_ith(self._context.ctx, position), shape=(self._n_vocab,)
        )
        return token_logprob(logits, token, piece, top, self._llama.detokenize)

    def _end_choice(self, choice: Choice, reason: FinishReason) -> None:
        generation = choice.owner.generation
        if reason is not FinishReason.CANCELLED:
            tail = choice.stops.feed(choice.decoder.decode(b"", final=True)) + choice.stops.flush()
            if tail:
                generation.push(choice.index, tail, tuple(choice.pending))
        generation.finish_choice(choice.index, reason)
        choice.next_token = None
        choice.slot.busy = False
        choice.sampler.close()
        choice.sampler = None

    def _retire_finished(self) -> None:
        still = []
        for request in self._running:
            if all(choice.sampler is None for choice in request.choices):
                request.generation.finish()
                self._stats.active_generations -= 1
            else:
                still.append(request)
        self._running = still
        self._stats.busy_slots = sum(slot.busy for slot in self._slots)

    def _drop_cancelled(self) -> None:
        for request in self._running:
            if not request.generation.cancelled:
                continue
            for choice in request.choices:
                if choice.sampler is not None:
                    self._end_choice(choice, FinishReason.CANCELLED)
                    # Keep the prompt's cells for reuse; what it generated is unlikely to be asked again.
                    self._forget(choice.slot, keep=len(request.prompt))
        for request in [r for r in self._waiting if r.generation.cancelled]:
            self._waiting.remove(request)
            self._end_unplaced(request)
        # Before admission reuses their slots: a request in ``_running`` always owns its slots.
        self._retire_finished()

    def _end_unplaced(self, request: Submitted) -> None:
        for index in range(request.request.n):
            request.generation.finish_choice(index, FinishReason.CANCELLED)
        request.generation.finish()
        self._stats.active_generations -= 1

    def _fail_running(self, error: Exception) -> None:
        for request in self._running:
            request.generation.fail(error)
            self._stats.active_generations -= 1
            for choice in request.choices:
                choice.slot.busy = False
                self._forget(choice.slot, keep=0)
        self._running = []
        self._stats.busy_slots = 0

    def _abort_all(self) -> None:
        """Shutdown: every request still here ends as cancelled (the service reports it as retryable)."""
        for request in self._running:
            for choice in request.choices:
                if choice.sampler is not None:
                    self._end_choice(choice, FinishReason.CANCELLED)
        self._retire_finished()
        while self._waiting:
            self._end_unplaced(self._waiting.popleft())
