"""Embedded llama.cpp engine (llama-cpp-python): the default LLM, in-process.

How it meets the interface's promises (FINDINGS.md, LLM):
- Generation runs on a dedicated worker thread; pieces reach the event loop through
  `call_soon_threadsafe` into an `asyncio.Queue`. The loop never blocks on the model.
- Cancel: breaking out of llama-cpp-python's iterator only stops between tokens and cannot stop
  prompt processing (seconds for a long history). llama.cpp's abort callback, checked between graph
  nodes, stops both in a few ms: the aborted `llama_decode` raises `RuntimeError(... 2)`, which we
  swallow because we asked for it.
- Prefix cache: `create_chat_completion` renders the model's own chat template and llama-cpp-python
  keeps the KV cache of the longest common token prefix, so a new turn only evaluates what is new.
  An abort keeps that cache too (llama.cpp drops the aborted ubatch), so the turn after a barge-in
  does not re-read the whole history.
- `background=True` work (a conversation's summary) leaves that cache as it found it: the
  context's KV cells are saved before (`llama_state_seq_get_data`, ~28 KB a token for the 1.5B
  model) and put back after, also when the work is aborted, so the next turn of the
  conversation still finds its prefix evaluated. Aborted background work keeps its own cells
  too, and its next try starts from them: a summary preempted by reply after reply still
  progresses a batch (`n_batch` tokens) at a time. A second context would keep the cache as
  well, but costs ~760 MB more (measured: its own weight buffers and KV cache).
- One generation at a time: an `asyncio.Lock`, held until the worker thread has really
  finished (also when the consumer is cancelled), so two requests never share the context.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from services.llm.engine import (
    ChatTurn,
    GenParams,
    LLMEngine,
    LLMEngineError,
    Tool,
    ToolCall,
    tool_wire,
)

if TYPE_CHECKING:
    from llama_cpp import Llama

_DONE = object()  # end-of-stream marker put on the queue by the worker


class _Saved:
    """A copy of the context's KV cells (sequence 0) and the tokens they hold."""

    def __init__(self, llm: Llama, data: Any, size: int, tokens: Any) -> None:
        self.llm = llm
        self.data = data
        self.size = size
        self.tokens = tokens

    @classmethod
    def take(cls, llm: Llama) -> _Saved | None:
        import llama_cpp

        n = llm.n_tokens
        if n == 0:
            return None
        ctx = llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        data = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, data, size, 0)
        if written == 0:
            return None
        return cls(llm, data, written, llm.input_ids[:n].copy())

    def put_back(self) -> None:
        import llama_cpp

        llm = self.llm
        llm.n_tokens = 0  # until the cells are back: a failure leaves an empty, valid cache
        if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, self.data, self.size, 0) == 0:
            llm.reset()
            return
        n = len(self.tokens)
        llm.input_ids[:n] = self.tokens
        llm.n_tokens = n
        llm._requires_eval = True  # the logits are the background work's: evaluate again


class LlamaCppEngine(LLMEngine):
    """Any chat GGUF through llama-cpp-python, on one worker thread.

    `n_threads=None` uses every core this process may run on, for decoding too (llama-cpp-python
    would take half for decoding: on 2 cores, 19 against 25 tokens/s for the 1.5B model, and the
    voice benchmark's p50 90 ms later). `n_batch` tokens are evaluated per step: 64 evaluated
    the 1.5B model's prompts faster than 512 here (86 against 66 tokens/s on 2 cores) and lets
    aborted work keep more of what it did. Consumers should close the stream
    (`contextlib.aclosing`) or cancel the task iterating it; either aborts the generation within
    a few ms."""

    name = "llama_cpp"

    def __init__(
        self,
        model_path: str,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_batch: int = 64,
    ) -> None:
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.n_threads = n_threads
        self._llm: Llama | None = None
        self._closed = False
        self._load_lock = threading.Lock()
        self._lock = asyncio.Lock()  # one generation at a time (asyncio primitives bind lazily)
        self._abort = threading.Event()  # read by llama.cpp's abort callback between graph nodes
        self._abort_cb: Any = None  # the ctypes callback: kept here so it is never collected
        self._paused: _Saved | None = None  # the KV cells of background work that was preempted
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp")

    # -- lifecycle ------------------------------------------------------------------------------
    async def load(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._ensure_loaded)

    def _ensure_loaded(self) -> Llama:
        with self._load_lock:
            if self._llm is not None:
                return self._llm
            if self._closed:
                raise LLMEngineError("the llama.cpp engine is closed")
            try:
                import llama_cpp

                threads = self.n_threads or len(os.sched_getaffinity(0))
                kwargs: dict[str, Any] = {
                    "n_ctx": self.n_ctx,
                    "n_batch": self.n_batch,
                    "n_threads": threads,
                    "n_threads_batch": threads,
                    "verbose": False,
                }
                llm = llama_cpp.Llama(model_path=self.model_path, **kwargs)
                abort_event = self._abort

                def _should_abort(_data: Any) -> bool:
                    return abort_event.is_set()

                self._abort_cb = llama_cpp.ggml_abort_callback(_should_abort)
                llama_cpp.llama_set_abort_callback(llm._ctx.ctx, self._abort_cb, None)
            except LLMEngineError:
                raise
            except Exception as exc:  # bad path, bad file, missing library
                raise LLMEngineError(f"cannot load model {self.model_path}: {exc}") from exc
            # A chat template that renders `tools` can be offered them (Qwen2.5's; SmolLM2's
            # cannot: it is never sent tools, and says so).
            template = str(llm.metadata.get("tokenizer.chat_template", ""))
            self.supports_tools = "tools" in template
            self._llm = llm
            return llm

    async def aclose(self) -> None:
        self._closed = True
        self._abort.set()
        async with self._lock:  # wait for a running generation to end
            llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, llm.close)
        self._executor.shutdown(wait=False)

    # -- tokens ---------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone with the model's tokenizer (no BOS, special tokens as text).
        Loads the model on first use if `load()` was not awaited."""
        if not text:
            return 0
        llm = self._ensure_loaded()
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    # -- generation -----------------------------------------------------------------------------
    async def stream(
        self,
        messages: list[ChatTurn],
        params: GenParams,
        background: bool = False,
        tools: Sequence[Tool] = (),
    ) -> AsyncGenerator[str | ToolCall, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()

        def emit(item: object) -> None:  # worker thread -> event loop
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self._abort.set()

        await self._lock.acquire()
        self._abort.clear()  # the previous generation has fully ended: the lock says so
        try:
            job = loop.run_in_executor(
                self._executor, self._generate, messages, params, emit, background, tools
            )
        except RuntimeError as exc:  # the executor is shut down: aclose() was called
            self._lock.release()
            raise LLMEngineError("the llama.cpp engine is closed") from exc
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield cast(str, item)
        finally:
            self._abort.set()  # no-op when the worker already finished
            if job.done():
                self._lock.release()
            else:
                # Release only when the thread has left the model, even if we are cancelled
                # again while waiting; the abort callback makes that a few ms.
                job.add_done_callback(lambda _job: self._lock.release())
                await asyncio.shield(job)

    def _generate(
        self,
        messages: list[ChatTurn],
        params: GenParams,
        emit: Callable[[object], None],
        background: bool = False,
        tools: Sequence[Tool] = (),
    ) -> None:
        """Worker thread: run one chat completion, emit its text pieces then _DONE or an error.
        Never raises: every outcome is put on the queue."""
        produced = False
        chunks: Iterator[Any] | None = None
        saved: _Saved | None = None
        finished = False
        try:
            llm = self._ensure_loaded()
            if background:
                saved = _Saved.take(llm)
                if self._paused is not None:  # background work preempted earlier: go on from it
                    self._paused.put_back()
                    self._paused = None
            wire: Any = [m.wire(arguments_as_text=False) for m in messages]
            result: Any = llm.create_chat_completion(
                messages=wire,
                tools=cast(Any, tool_wire(tools)) if tools else None,
                stream=True,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_tokens,
            )
            chunks = iter(result)
            for chunk in chunks:
                if self._abort.is_set():
                    break
                text = chunk["choices"][0]["delta"].get("content")
                if text:
                    produced = True
                    emit(text)
            finished = not self._abort.is_set()
        except Exception as exc:
            if self._abort.is_set():
                self._after_abort()  # expected: "llama_decode returned 2" after our abort
            elif isinstance(exc, LLMEngineError):
                emit(exc)
            elif isinstance(exc, ValueError):  # prompt longer than the context window
                emit(LLMEngineError(f"llama.cpp rejected the request: {exc}"))
            else:
                emit(LLMEngineError(f"llama.cpp failed: {exc}", retryable=not produced))
        finally:
            if chunks is not None and hasattr(chunks, "close"):
                try:
                    chunks.close()
                except Exception:  # closing after an abort: the state is fixed below anyway
                    pass
            if background and self._llm is not None:
                if not finished:  # preempted: keep what it evaluated for its next try
                    self._paused = _Saved.take(self._llm)
                if saved is not None:
                    saved.put_back()
        emit(_DONE)

    def _after_abort(self) -> None:
        """Make the next request safe after an aborted llama_decode.

        The KV cache is consistent (llama.cpp removes the aborted ubatch, and llama-cpp-python
        did not count its tokens), but the logits buffer may be stale: force a re-evaluation of
        the last token instead of sampling from it. `_requires_eval` is private to the pinned
        llama-cpp-python 0.3.36; without it, fall back to a full reset (loses the prefix cache)."""
        llm = self._llm
        if llm is None:
            return
        if hasattr(llm, "_requires_eval"):
            llm._requires_eval = True
        else:
            llm.reset()
