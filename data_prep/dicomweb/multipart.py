"""multipart/related bodies (RFC 2387), the envelope of DICOMweb's WADO-RS answers and STOW-RS
requests: written from files as they are sent, split into files as they arrive (never whole in
memory)."""
import base64
import http.client
import os

from .errors import PacsError

__all__ = ["CHUNK", "request", "save_parts", "read_answer", "MultipartWriter"]

CHUNK = 1 << 20


def request(files):
    """(headers, body) of a multipart/related request carrying ``files`` as application/dicom:
    the body is an iterator that reads each file as it is sent; Content-Length is the sum."""
    boundary = "medsr-" + base64.b32encode(os.urandom(15)).decode("ascii")
    length = sum(len(_part_header(boundary)) + f.stat().st_size + 2 for f in files) \
        + len(_closing(boundary))
    headers = [("Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}'),
               ("Content-Length", str(length))]
    return headers, _body(files, boundary)


def _part_header(boundary):
    return f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")


def _closing(boundary):
    return f"--{boundary}--\r\n".encode("ascii")


def _body(files, boundary):
    for f in files:
        yield _part_header(boundary)
        with open(f, "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
        yield b"\r\n"
    yield _closing(boundary)


def read_answer(stream, size, where):
    """``stream.read(size)``; a connection that breaks or times out midway is one PacsError line
    (an error writing what was read is not caught here: that one names the local file)."""
    try:
        return stream.read(size)
    except (OSError, http.client.HTTPException) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise PacsError(f"{where}: the PACS stopped answering midway ({why})") from None


def save_parts(response, folder, where):
    """Write each part of a multipart/related response into ``folder`` as ``<n>.part``, as it
    streams in; returns their count. PacsError when the answer is not multipart or is cut short."""
    if response.headers.get_content_maintype() != "multipart":
        raise PacsError(f"{where}: the PACS answered {response.headers.get_content_type()}, not multipart")
    boundary = response.headers.get_param("boundary")
    if not boundary:
        raise PacsError(f"{where}: the PACS's multipart answer names no boundary")
    return MultipartWriter(boundary.encode("latin-1"), folder, where).feed_all(response)


class MultipartWriter:
    """Split a multipart body (RFC 2046) into files, one per part, as its bytes arrive."""

    def __init__(self, boundary, folder, where):
        self.delimiter = b"--" + boundary
        self.folder, self.where = folder, where
        self.buf, self.state, self.out, self.count = b"", "preamble", None, 0

    def feed_all(self, stream):
        try:
            while chunk := read_answer(stream, CHUNK, self.where):
                self.buf += chunk
                self._advance()
        finally:
            if self.out is not None:
                self.out.close()
        if self.state != "done":
            raise PacsError(f"{self.where}: the PACS's answer ended before its last part")
        return self.count

    def _advance(self):
        while self.state != "done":
            step = getattr(self, "_" + self.state)()
            if not step:
                return

    def _preamble(self):
        i = self.buf.find(self.delimiter)
        if i < 0:
            return False
        self.buf = self.buf[i + len(self.delimiter):]
        self.state = "after_delimiter"
        return True

    def _after_delimiter(self):
        if len(self.buf) < 2:
            return False
        if self.buf.startswith(b"--"):
            self.state, self.buf = "done", b""
            return True
        end = self.buf.find(b"\r\n")
        if end < 0:
            return False
        self.buf = self.buf[end + 2:]  # transport padding, then CRLF
        self.state = "headers"
        return True

    def _headers(self):
        if self.buf.startswith(b"\r\n"):  # a part without headers: the blank line at once
            end = -2
        else:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
        self.buf = self.buf[end + 4:]
        self.count += 1
        self.out = open(self.folder / f"{self.count:05d}.part", "wb")
        self.state = "body"
        return True

    def _body(self):
        marker = b"\r\n" + self.delimiter
        i = self.buf.find(marker)
        if i < 0:
            keep = len(marker) - 1  # a marker may straddle two chunks
            if len(self.buf) > keep:
                self.out.write(self.buf[:-keep])
                self.buf = self.buf[-keep:]
            return False
        self.out.write(self.buf[:i])
        self.out.close()
        self.out = None
        self.buf = self.buf[i + len(marker):]
        self.state = "after_delimiter"
        return True
