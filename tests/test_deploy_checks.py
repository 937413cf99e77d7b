"""``deploy supernode`` says why a node cannot connect when its TLS setting does not match the SuperLink's."""

import socket
import ssl
import threading

import pytest

from deploy import certs, launch
from deploy.__main__ import main as deploy_main


def serve(handle) -> tuple[str, threading.Event]:
    """A loopback server answering each connection with ``handle(conn)``; returns its address."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def loop():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            with conn:
                try:
                    handle(conn)
                except (OSError, ssl.SSLError):
                    pass
        listener.close()

    threading.Thread(target=loop, daemon=True).start()
    return f"127.0.0.1:{listener.getsockname()[1]}", stop


@pytest.fixture
def tls_server(tmp_path):
    certs.make_ca(tmp_path)
    cert, key = certs.make_server_cert(tmp_path, ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def handle(conn):
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    address, stop = serve(handle)
    yield address
    stop.set()


@pytest.fixture
def plain_server():
    address, stop = serve(lambda conn: conn.sendall(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00" * 4))  # HTTP/2-ish bytes
    yield address
    stop.set()


def test_the_probe_tells_tls_from_plain_from_nothing(tls_server, plain_server):
    assert launch.speaks_tls(tls_server) is True
    assert launch.speaks_tls(plain_server) is False
    unused = socket.create_server(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()
    assert launch.speaks_tls(f"127.0.0.1:{port}") is None


def test_an_insecure_node_against_a_tls_superlink_is_refused_with_the_fix(tls_server, capsys):
    assert deploy_main(["supernode", "--superlink", tls_server, "--insecure", "--partition-id", "0",
                        "--num-partitions", "2"]) == 2
    err = capsys.readouterr().err
    assert f"the SuperLink at {tls_server} uses TLS" in err and "drop --insecure" in err


def test_a_tls_node_against_a_plain_superlink_is_refused_with_the_fix(plain_server, capsys):
    assert deploy_main(["supernode", "--superlink", plain_server, "--partition-id", "0",
                        "--num-partitions", "2"]) == 2
    assert "does not speak TLS" in capsys.readouterr().err


def test_matching_settings_pass_the_check(tls_server, plain_server):
    assert launch.tls_mismatch(tls_server, insecure=False) is None
    assert launch.tls_mismatch(plain_server, insecure=True) is None
