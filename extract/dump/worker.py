"""Decode workers: one process per worker, one pipe each, hard per-video time limits.

:class:`DecodePool` runs :func:`process_task` in ``workers`` processes (``forkserver``
start method: the server imports this module once, every worker forks from it; no CUDA but
RAFT flow on a GPU, one torch thread and one OpenCV thread per worker) and yields results in completion order
while the main process runs the models. Each task is one video decoded once for all its
makers, which build their inputs in the worker (crops, optical flow, log-mel). A background
thread keeps every worker fed (up to ``depth`` tasks
queued per worker, at most ``max_ahead`` results waiting for the model) and watches the
clock: a worker whose current video runs past ``timeout_s`` plus a grace period is killed
and replaced, its video gets a ``DecodeTimeout`` error and its queued videos go to the new
worker. A worker that dies (a crash inside FFmpeg) is replaced the same way.

Each worker has its own duplex pipe, so killing one can never leave a shared queue lock
held. ``workers=0`` decodes in the calling process instead (no hard time limit);
:func:`stop_fork_server` then frees the fork server an earlier pool (the header probes) left.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import multiprocessing as mp
import multiprocessing.forkserver
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Self

import numpy as np

from extract.dump.makers import InputMaker, ModelInput
from extract.media.decode import DecodeError, DecodeTimeout, WindowOutsideVideo, decode_video, probe_video
from extract.media.sampling import union_frame_indices, window_frames

log = logging.getLogger(__name__)

UNEXPECTED = "unexpected error"
DIED = "decoder process died"


@dataclass(frozen=True)
class DecodeTask:
    """One video for the workers.

    Attributes:
        row: store row.
        path: video file.
        n_frames: frame count from the store (<= 0: unknown, probe first).
        fps: frame rate from the store (used for clip times if the decoder gives none).
        makers: indices of the makers that need this video (empty with ``probe_only``).
        probe_only: read the header only (store creation).
        window: ``(start, end)`` seconds of an untrimmed file the clips come from (the
            ``trim_start``/``trim_end`` columns), or None for the whole file.
    """

    row: int
    path: str
    n_frames: int = -1
    fps: float = float("nan")
    makers: tuple[int, ...] = ()
    probe_only: bool = False
    window: tuple[float, float] | None = None


@dataclass
class DecodeResult:
    """What a worker sends back for one task.

    Attributes:
        row: the task's row.
        makers: the task's makers.
        inputs: one ModelInput per maker in ``makers`` (empty on error).
        info: header values (``n_frames``, ``fps``, ``duration``, ``has_audio``) when probed.
        error: one-line error text for the store, or None.
        reason: error kind for the summary (``DecodeError.kind``), or None.
        decode_calls: ``decode_video`` calls (container opens that decode) for this video.
        probe_calls: ``probe_video`` calls (header-only opens).
        seconds: wall time the worker spent.
        make_seconds: time of each maker's ``make`` (crops, flow, log-mel), as ``inputs``.
    """

    row: int
    makers: tuple[int, ...] = ()
    inputs: list[ModelInput] = field(default_factory=list)
    info: dict | None = None
    error: str | None = None
    reason: str | None = None
    decode_calls: int = 0
    probe_calls: int = 0
    seconds: float = 0.0
    make_seconds: list[float] = field(default_factory=list)


def _window(task: DecodeTask, n_frames: int, fps: float) -> tuple[int, int]:
    """``(first frame, frame count)`` the makers sample from: the task's window, else the file."""
    if task.window is None:
        return 0, n_frames
    if not fps > 0:
        raise WindowOutsideVideo(task.path, "the container gives no frame rate, so the window cannot be placed")
    first, count = window_frames(*task.window, fps, n_frames)
    if count < 1:
        raise WindowOutsideVideo(task.path, f"the window [{task.window[0]:g}, {task.window[1]:g}) s starts "
                                 f"past the video's end ({n_frames / fps:.2f} s)")
    return first, count


def process_task(task: DecodeTask, makers: Sequence[InputMaker], timeout_s: float) -> DecodeResult:
    """Probe (if needed) and decode one video once for all its makers; errors become results.

    The frames are the union of every maker's frames, decoded at the largest short side a
    maker that needs frames asks for (the others resize from it); the audio comes from the
    same open when a maker has an ``audio_rate``. One ``decode_video`` call per video,
    whatever the number of makers, with the makers' decoder (``InputMaker.decoder``).
    """
    start = time.perf_counter()
    res = DecodeResult(task.row, task.makers)
    try:
        n_frames, fps = task.n_frames, task.fps
        if n_frames <= 0 or task.probe_only:
            info = probe_video(task.path, timeout_s=timeout_s)
            res.probe_calls += 1
            n_frames, fps = info.n_frames, info.fps
            res.info = {
                "n_frames": info.n_frames,
                "fps": info.fps,
                "duration": info.duration,
                "has_audio": info.has_audio,
            }
        if not task.probe_only:
            chosen = [makers[i] for i in task.makers]
            sizes = {m.decode_short_side for m in chosen if m.needs_frames}
            size = None if (None in sizes or not sizes) else max(sizes)
            rates = {m.audio_rate for m in chosen} - {None}
            if len(rates) > 1:
                raise ValueError(f"makers ask for different audio rates {sorted(rates)}")
            decoders = {m.decoder for m in chosen}
            if len(decoders) > 1:
                raise ValueError(f"makers ask for different decoders {sorted(decoders)}")
            first, count = _window(task, n_frames, fps)
            video = decode_video(
                task.path,
                union_frame_indices(*[m.frame_indices(count, fps) for m in chosen]) + first,
                size,
                timeout_s=timeout_s,
                audio_rate=rates.pop() if rates else None,
                decoder=decoders.pop(),
            )
            res.decode_calls += 1
            if task.window is not None:  # the makers see the window as a trimmed file
                decoded, video = video.n_frames, video.trimmed(first, count)
                if video.n_frames < 1:
                    raise WindowOutsideVideo(task.path, f"the stream ends at frame {decoded}, before the "
                                             f"window [{task.window[0]:g}, {task.window[1]:g}) s")
            for m in chosen:
                t = time.perf_counter()
                made = m.make(video, count, fps)
                if first:  # clip times in seconds of the file
                    made = dataclasses.replace(made, times=made.times + np.float32(first / fps))
                res.inputs.append(made)
                res.make_seconds.append(time.perf_counter() - t)
    except DecodeError as err:
        res.error, res.reason, res.inputs, res.make_seconds = str(err), err.kind, [], []
    except Exception as err:  # a bug or an odd file must not stop the run: record it on the row
        log.warning(
            "%s: unexpected %s while decoding", task.path, type(err).__name__, exc_info=True
        )
        res.error = f"{UNEXPECTED}: {task.path}: {type(err).__name__}: {' '.join(str(err).split())}"
        res.reason, res.inputs, res.make_seconds = UNEXPECTED, [], []
    res.seconds = time.perf_counter() - start
    return res


def _serve(conn: Connection, makers: Sequence[InputMaker], timeout_s: float) -> None:
    """Worker loop: receive tasks, send results; exit on None or when the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    if "torch" in sys.modules:  # imported through extract.media.transforms; keep it to one thread
        sys.modules["torch"].set_num_threads(1)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        result = process_task(task, makers, timeout_s)
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Slot:
    proc: mp.Process
    conn: Connection
    queued: collections.deque = field(default_factory=collections.deque)  # tasks sent, in order
    head_since: float = 0.0  # when the first queued task started (at the latest)


_DONE = object()


class DecodePool:
    """Decode tasks in worker processes; iterate results in completion order.

    Args:
        makers: the input makers (sent to every worker once).
        workers: processes; 0 decodes in the calling process.
        timeout_s: per-video limit passed to the decoder; the hard kill comes after a grace
            of ``max(1, timeout_s / 4)`` seconds more.
        max_ahead: results allowed to wait for the consumer (bounds memory).
        depth: tasks queued per worker (1 running + prefetch).
    """

    def __init__(
        self,
        makers: Sequence[InputMaker],
        workers: int,
        *,
        timeout_s: float = 120.0,
        max_ahead: int = 32,
        depth: int = 2,
        start_method: str = "forkserver",
    ) -> None:
        self.makers = list(makers)
        self.workers = workers
        self.timeout_s = timeout_s
        self.hard_timeout_s = timeout_s + max(1.0, timeout_s / 4)
        self.max_ahead = max(max_ahead, workers * depth)
        self.depth = depth
        self.replaced = 0
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload(["extract.dump.worker"])
        self._slots: list[_Slot] = []
        self._stop = threading.Event()
        self._pump_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ workers
    def _start_worker(self) -> _Slot:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_serve,
            args=(child, self.makers, self.timeout_s),
            name="extract-decode",
            daemon=True,
        )
        proc.start()
        child.close()
        return _Slot(proc, parent)

    def _replace(self, i: int, why: str) -> list[DecodeTask]:
        """Kill worker i, start a fresh one; return the tasks it had queued after the head."""
        slot = self._slots[i]
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.proc.join(5)
        slot.conn.close()
        rest = list(slot.queued)[1:]
        self._slots[i] = self._start_worker()
        self.replaced += 1
        log.warning(
            "decode worker %d replaced (%s); %d queued video(s) moved to the new one",
            i,
            why,
            len(rest),
        )
        return rest

    def close(self) -> None:
        """Stop the pump thread and every worker."""
        self._stop.set()
        if self._pump_thread is not None and self._pump_thread is not threading.current_thread():
            self._pump_thread.join()
        self._pump_thread = None
        for slot in self._slots:
            try:
                slot.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 5
        for slot in self._slots:
            slot.proc.join(max(0.0, deadline - time.monotonic()))
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join()
            slot.conn.close()
        self._slots.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ iteration
    def imap_unordered(self, tasks: Iterable[DecodeTask]) -> Iterator[DecodeResult]:
        """Results of ``tasks`` as they finish (the pool keeps ``max_ahead`` in flight)."""
        if self.workers == 0:
            for task in tasks:
                yield process_task(task, self.makers, self.timeout_s)
            return
        if self._pump_thread is not None:
            raise RuntimeError(
                "DecodePool.imap_unordered is already running; finish that iteration first"
            )
        self._slots = [self._start_worker() for _ in range(self.workers)]
        out: queue.Queue = queue.Queue()
        self._stop.clear()
        self._pump_thread = threading.Thread(
            target=self._pump_guarded, args=(iter(tasks), out), name="extract-pump", daemon=True
        )
        self._pump_thread.start()
        try:
            while True:
                item = out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def _pump_guarded(self, tasks: Iterator[DecodeTask], out: queue.Queue) -> None:
        try:
            self._pump(tasks, out)
            out.put(_DONE)
        except Exception as exc:  # noqa: BLE001  (handed to the consumer thread, raised there)
            out.put(exc)

    def _pump(self, tasks: Iterator[DecodeTask], out: queue.Queue) -> None:
        retry: collections.deque[DecodeTask] = collections.deque()
        exhausted = False
        while not self._stop.is_set():
            for i, slot in enumerate(self._slots):  # an idle worker that died: nothing lost
                if not slot.queued and not slot.proc.is_alive():
                    self._replace(i, f"it died idle with exit code {slot.proc.exitcode}")
            in_flight = sum(len(s.queued) for s in self._slots)
            while (retry or not exhausted) and in_flight + out.qsize() < self.max_ahead:
                slot_i = min(range(len(self._slots)), key=lambda i: len(self._slots[i].queued))
                slot = self._slots[slot_i]
                if len(slot.queued) >= self.depth:
                    break
                task = retry.popleft() if retry else next(tasks, None)
                if task is None:
                    exhausted = True
                    break
                try:
                    slot.conn.send(task)
                except (
                    BrokenPipeError,
                    OSError,
                ):  # it died: wait() below or the check above sees it
                    retry.appendleft(task)
                    break
                if not slot.queued:
                    slot.head_since = time.monotonic()
                slot.queued.append(task)
                in_flight += 1
            if exhausted and not retry and in_flight == 0:
                return
            busy = {s.conn: i for i, s in enumerate(self._slots) if s.queued}
            if not busy:  # the consumer is behind: wait for it to take results
                self._stop.wait(0.01)
            for conn in wait(list(busy), timeout=0.05) if busy else ():
                i = busy[conn]
                slot = self._slots[i]
                try:
                    result = conn.recv()
                except (EOFError, OSError):
                    task = slot.queued[0]
                    slot.proc.join(5)  # reap it, for the exit code
                    code = slot.proc.exitcode
                    retry.extendleft(reversed(self._replace(i, f"it died with exit code {code}")))
                    out.put(
                        _failed(
                            task,
                            DIED,
                            f"{DIED}: {task.path}: exit code {code} while decoding "
                            "(re-encode the file with ffmpeg or drop it)",
                        )
                    )
                    continue
                slot.queued.popleft()
                slot.head_since = time.monotonic()
                out.put(result)
            now = time.monotonic()
            for i, slot in enumerate(self._slots):
                if slot.queued and now - slot.head_since > self.hard_timeout_s:
                    task = slot.queued[0]
                    err = DecodeTimeout(
                        task.path,
                        f"worker killed after {now - slot.head_since:.0f} s "
                        f"(limit {self.timeout_s:g} s)",
                    )
                    retry.extendleft(
                        reversed(self._replace(i, f"{task.path} ran past the time limit"))
                    )
                    out.put(_failed(task, err.kind, str(err)))


def stop_fork_server() -> bool:
    """Stop the decode processes' fork server if it runs; True if it did.

    The server is an interpreter of its own with this module, hence torch, imported (~0.4 GB
    resident); a run that decodes in its main process does not need it after the header
    probes. The next :class:`DecodePool` starts a fresh one (``ensure_running``).
    ``multiprocessing`` has no public call for this: it is ``ForkServer._stop``, the method
    the standard library's own tests use, looked up defensively.
    """
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None or not hasattr(server, "_stop"):
        return False
    with contextlib.suppress(ProcessLookupError):  # its own exit tears torch down for seconds; it owns no data
        os.kill(pid, signal.SIGKILL)
    server._stop()  # closes its pipe, reaps it, forgets it
    return True


def _failed(task: DecodeTask, reason: str, error: str) -> DecodeResult:
    return DecodeResult(task.row, task.makers, error=error, reason=reason)
