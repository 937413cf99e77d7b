"""A node's warm worker: one long-lived process that answers its ClientApp's messages.

Flower's SuperNode runs every message in a fresh ``flwr-clientapp`` process, and importing
torch and PyG alone takes about 2.8 s there (PyG imports ``torch._dynamo``), before any work.
A worker started beside the SuperNode keeps them loaded, and its compiled kernels warm:
the ClientApp process imports only Flower, numpy and :mod:`fedalign.client.requests`, hands
the request over a Unix socket (mode 0600, in the node's state dir) and sends back the
answer. What is computed and kept does not change: the worker runs the same
:func:`~fedalign.client.service.answer_request` (prepared data, checkpoint, evaluation log)
the ClientApp runs itself when no worker is configured -- or when its worker cannot be
reached or dies mid-request, which it logs; a repeated request gets the checkpoint's
stored reply, so nothing is trained or released twice.

``python -m fedalign.client.worker SOCKET`` runs one (``python -m deploy supernode`` and
``deploy local`` start one per node and put its socket in the node config as ``worker``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Client, Listener
from pathlib import Path

from .requests import Answer, Request, decode_answer, decode_request, encode_answer, encode_failure, encode_request

log = logging.getLogger("fedalign")

MAX_SOCKET_PATH = 107  # AF_UNIX path limit on Linux (108 bytes with the terminating NUL)


def ask(socket_path: str | Path, request: Request) -> Answer | None:
    """The worker's answer to ``request``; None when the worker cannot be reached or dies before
    answering (the caller then answers itself). A request the worker refused raises
    :class:`~fedalign.client.requests.AnswerFailed` with the worker's error.

    Args:
        socket_path: the worker's Unix socket.
        request: the request to answer.
    """
    try:
        conn = Client(str(socket_path), family="AF_UNIX")
    except OSError as error:
        log.warning("worker %s unreachable (%s); answering in this process", socket_path, error)
        return None
    with conn:
        try:
            conn.send_bytes(encode_request(request))
            frame = conn.recv_bytes()
        except (OSError, EOFError) as error:
            log.warning("worker %s ended before answering (%s); answering in this process", socket_path, error)
            return None
    return decode_answer(frame)


def serve(socket_path: str | Path, ready: Callable[[], None] = lambda: None) -> None:
    """Answer requests on ``socket_path`` one at a time (a SuperNode sends one at a time), forever.

    Args:
        socket_path: the Unix socket to listen on (created mode 0600; its path at most ``MAX_SOCKET_PATH``
            characters).
        ready: called once the socket listens.
    """
    from .service import answer_request  # torch, PyG, fedalign: loaded once, here

    path = Path(socket_path)
    if len(str(path)) > MAX_SOCKET_PATH:
        raise ValueError(
            f"worker socket path {path} is {len(str(path))} characters; a Unix socket path has at most "
            f"{MAX_SOCKET_PATH}: use a shorter state dir"
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)
    previous = os.umask(0o177)  # the socket is created 0600: only this user may talk to the worker
    try:
        listener = Listener(str(path), family="AF_UNIX")
    finally:
        os.umask(previous)
    with listener:
        ready()
        while True:
            with listener.accept() as conn:
                try:
                    request = decode_request(conn.recv_bytes())
                except (OSError, EOFError, ValueError, TypeError, KeyError) as error:
                    log.warning("worker: unreadable request dropped (%s)", error)
                    continue
                try:
                    frame = encode_answer(answer_request(request, prepared=True))
                except Exception as error:  # the ClientApp raises it, as it would have itself
                    log.exception("worker: request %s:%s failed", request.message_type, request.round_number)
                    frame = encode_failure(f"{type(error).__name__}: {error}")
                try:
                    conn.send_bytes(frame)
                except OSError as error:
                    log.warning("worker: the ClientApp left before the answer (%s)", error)


def _exit_with(parent: int, socket_path: Path) -> None:
    """End this process (and remove its socket) once ``parent`` is gone: this process is re-parented then."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        socket_path.unlink(missing_ok=True)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """The command line of ``python -m fedalign.client.worker``: serve on a socket until stopped.

    Args:
        argv: the command-line arguments, or None for ``sys.argv[1:]``.

    Returns:
        the exit status, 0.
    """
    parser = argparse.ArgumentParser(
        prog="python -m fedalign.client.worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("socket", help="Unix socket path to listen on (give the same path as the node config's worker)")
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="exit when the process that started this one ends (e.g. its SuperNode)",
    )
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if a.exit_with_parent:
        _exit_with(os.getppid(), Path(a.socket))
    try:
        serve(a.socket, ready=lambda: print(f"fedalign worker: listening on {a.socket}", flush=True))
    finally:
        Path(a.socket).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
