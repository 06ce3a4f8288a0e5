"""The fastest HTTP file transfer this machine allows, as a yardstick for bench/file-transfer.ts.

A one-request-per-connection HTTP/1.1 server with no framework and no copies in user space: GET
answers SOURCE with sendfile(2), PUT splices the body from the socket through a pipe into DEST.
Whatever a real server adds (auth, routing, an agent, a sandbox), it cannot beat this.

Usage: python3 zero-copy-http.py SOURCE DEST   (prints the port it listens on, then serves)
"""
import os
import socket
import sys

source, dest = sys.argv[1], sys.argv[2]
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(16)
print(listener.getsockname()[1], flush=True)


def read_head(conn):
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the head ended")
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return lines[0].split(b" ")[0], headers, rest


def download(conn):
    size = os.path.getsize(source)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
    fd = os.open(source, os.O_RDONLY)
    try:
        offset = 0
        while offset < size:
            offset += os.sendfile(conn.fileno(), fd, offset, size - offset)
    finally:
        os.close(fd)


def upload(conn, headers, rest):
    length = int(headers[b"content-length"])
    if headers.get(b"expect", b"").lower() == b"100-continue":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    read_end, write_end = os.pipe()
    try:
        os.write(fd, rest)
        received = len(rest)
        while received < length:
            moved = os.splice(conn.fileno(), write_end, min(1 << 20, length - received))
            if moved == 0:
                raise ConnectionError("closed before the body ended")
            written = 0
            while written < moved:
                written += os.splice(read_end, fd, moved - written)
            received += moved
    finally:
        os.close(read_end)
        os.close(write_end)
        os.close(fd)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


while True:
    conn, _ = listener.accept()
    try:
        method, headers, rest = read_head(conn)
        if method == b"GET":
            download(conn)
        elif method == b"PUT":
            upload(conn, headers, rest)
        else:
            conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except (ConnectionError, OSError) as error:
        print(f"zero-copy-http: {error}", file=sys.stderr, flush=True)
    finally:
        conn.close()
