"""The PACS (docs/pacs.md): `make pacs-up`'s Orthanc (tools/pacs/orthanc.sh) and the DICOMweb client
(data_prep.dicomweb), marked ``pacs`` and ``slow``, against a real Orthanc of our own in a temporary
folder on a free port (one per module): up and down idempotent, a taken port named, the
credentials private, anonymous and remote clients refused, the shipped series stored, found by its
description, fetched back with the same pixel data, stored again without a duplicate and deleted,
a store that fails midway leaving no series, and one line for each failure. As root (as CI runs)
the server must start, apt-get installing the packages when missing; without root those tests are
skipped, with the reason, when Orthanc or its DICOMweb plugin is missing. The client's parts that
need no server (the multipart splitter, the credentials, a server error) are tested without one."""
import base64
import http.client
import http.server
import json
import re
import socket
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest

from core.config import ROOT
from data_prep.dicomweb import Pacs, PacsError, Series, connect, read_credentials
from data_prep.dicomweb.multipart import MultipartWriter
from data_prep.sources import PROSTATE_DIR
from tests.helpers import (PACS_EXPORTS, alive, clean_env, free_port, make, orthanc,
                           orthanc_server, start_orthanc)

SHIPPED = PROSTATE_DIR
EXPORTS = re.compile(PACS_EXPORTS, re.M)
start = start_orthanc


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """{url, credentials, folder} of a running server; stopped (and checked) afterwards."""
    yield from orthanc_server(tmp_path_factory.mktemp("pacs"))


@pytest.fixture
def pacs(server):
    return connect(server["url"], env={"MEDSR_PACS_CREDENTIALS": server["credentials"]})


def get(url, auth=None, source=None):
    """The HTTP status of GET ``url`` with ``auth`` (a credentials file, or "user:password"),
    from the local address ``source`` when given. A file, so that a failing assertion does not
    print the password."""
    request = urllib.request.Request(url)
    if auth:
        text = "%s:%s" % read_credentials(auth) if Path(auth).is_file() else auth
        request.add_header("Authorization", "Basic " + base64.b64encode(text.encode()).decode())
    handlers = []
    if source:
        class FromSource(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(lambda host, **kw: http.client.HTTPConnection(
                    host, source_address=(source, 0), **kw), req)
        handlers.append(FromSource)
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def outward_address():
    """An address of this machine that is not a loopback one, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, the route picks the address
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def cli(*args, env):
    return subprocess.run([sys.executable, "-m", "data_prep.dicomweb", *args], capture_output=True,
                          text=True, cwd=ROOT, env=clean_env(**env), timeout=120)


def pixel_data_by_sop(folder):
    out = {}
    for f in Path(folder).iterdir():
        ds = pydicom.dcmread(f)
        out[ds.SOPInstanceUID] = ds.PixelData
    return out


# The server ---------------------------------------------------------------------------------------

@pytest.mark.pacs
@pytest.mark.slow
def test_pacs_up_is_idempotent_and_down_stops_only_its_own(tmp_path):
    folder, port = tmp_path / "pacs dir", free_port()
    start(folder, port)  # installs if needed (or skips), so that make below only starts
    assert orthanc("down", "--dir", folder).returncode == 0
    try:
        check_up_twice_then_down(folder, port)
    finally:
        orthanc("down", "--dir", folder)


def check_up_twice_then_down(folder, port):
    first = make("pacs-up", f"PACS_DIR={folder}", f"PACS_PORT={port}")
    second = make("pacs-up", f"PACS_DIR={folder}", f"PACS_PORT={port}")
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    lines = EXPORTS.search(first.stdout)[0]
    assert lines == EXPORTS.search(second.stdout)[0]
    assert lines.startswith(f"export MEDSR_PACS_URL=http://127.0.0.1:{port}\n")
    assert f"export MEDSR_PACS_CREDENTIALS={folder}/credentials" in lines
    pid = int((folder / "orthanc.pid").read_text())
    assert "already up" not in first.stdout and "already up" in second.stdout and alive(pid)

    # a pid file naming another process: down leaves it alone
    decoy = subprocess.Popen(["sleep", "60"])
    try:
        down = make("pacs-down", f"PACS_DIR={folder}")
        assert down.returncode == 0 and f"stopped Orthanc (pid {pid})" in down.stdout
        assert not alive(pid)
        (folder / "orthanc.pid").write_text(f"{decoy.pid}\n")
        again = make("pacs-down", f"PACS_DIR={folder}")
        assert again.returncode == 0 and "no Orthanc of ours is running" in again.stdout
        assert decoy.poll() is None
    finally:
        decoy.kill()
        decoy.wait()


@pytest.mark.pacs
@pytest.mark.slow
def test_a_taken_port_is_named_in_one_line(server, tmp_path):  # server: Orthanc is installed
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        up = orthanc("up", "--dir", tmp_path / "other", "--port", port)
    assert up.returncode == 1
    assert up.stderr.strip().splitlines() == [up.stderr.strip()]
    assert f"port {port} is taken" in up.stderr and "PACS_PORT" in up.stderr
    assert not (tmp_path / "other" / "orthanc.pid").exists()


@pytest.mark.pacs
@pytest.mark.slow
def test_the_credentials_are_private_and_one_line(server):
    folder = server["folder"]
    creds = Path(server["credentials"])
    assert creds.parent == folder
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert re.fullmatch(r"medsr:[A-Za-z0-9]{32}\n", creds.read_text())
    # the configuration holds the password too
    assert stat.S_IMODE((folder / "orthanc.json").stat().st_mode) == 0o600
    assert read_credentials(creds)[0] == "medsr"


@pytest.mark.pacs
@pytest.mark.slow
def test_anonymous_wrong_password_and_remote_clients_are_refused(server):
    url, creds = server["url"], server["credentials"]
    assert get(f"{url}/dicom-web/studies") == 401
    assert get(f"{url}/system") == 401
    assert get(f"{url}/dicom-web/studies", auth="medsr:wrong") == 401
    assert get(f"{url}/dicom-web/studies", auth=creds) == 200
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no address but loopback: a remote client cannot be tried")
    # The same request from this machine's outward address is a remote client's: refused
    # (Orthanc answers 401 to it whatever the password).
    assert get(f"{url.replace('127.0.0.1', address)}/dicom-web/studies", auth=creds, source=address) == 401


# The client against it ----------------------------------------------------------------------------

@pytest.mark.pacs
@pytest.mark.slow
def test_round_trip_of_the_shipped_series(pacs, tmp_path):
    local = pydicom.dcmread(next(SHIPPED.iterdir()), stop_before_pixels=True)
    study, uid = local.StudyInstanceUID, local.SeriesInstanceUID
    assert pacs.store_series(SHIPPED) == {uid: 19}

    found = pacs.series(study, "t2_tse.*")
    assert [(s.uid, s.instances, s.description) for s in found] == [(uid, 19, "t2_tse_tra")]
    # the cohort's rule (data_prep.cohort.plan.description_matches): searched, case-insensitive
    assert [s.uid for s in pacs.series(study, "TSE")] == [uid]
    assert pacs.series(study, "^tse") == []

    [(series, folder)] = pacs.pull(study, "t2_tse_tra", tmp_path / "pulled")
    assert folder == tmp_path / "pulled" / f"4_t2_tse_tra_{uid}"
    assert pixel_data_by_sop(folder) == pixel_data_by_sop(SHIPPED)
    metadata = pacs.metadata(series)
    assert sorted(m["00080018"]["Value"][0] for m in metadata) == sorted(pixel_data_by_sop(SHIPPED))
    assert {tuple(m["00080008"]["Value"]) for m in metadata} == {tuple(local.ImageType)}
    with pytest.raises(PacsError, match="exists and is not an empty folder"):
        pacs.fetch_series(series, folder)

    assert pacs.store_series(SHIPPED) == {uid: 19}  # again: nothing new
    assert [s.instances for s in pacs.series(study)] == [19]

    assert pacs.delete_series(uid) is True
    assert pacs.delete_series(uid) is False
    with pytest.raises(PacsError, match=f"no study {study} on the PACS"):
        pacs.series(study)  # its only series gone, Orthanc drops the study


@pytest.mark.pacs
@pytest.mark.slow
def test_a_store_interrupted_midway_leaves_no_series(pacs, monkeypatch):
    uid = pydicom.dcmread(next(SHIPPED.iterdir()), stop_before_pixels=True).SeriesInstanceUID
    store = Pacs.store

    def half_then_interrupt(self, files, study=None):
        store(self, files[: len(files) // 2])
        assert self._orthanc_instances(uid) == len(files) // 2
        raise KeyboardInterrupt

    pacs.delete_series(uid)  # whatever another test left
    monkeypatch.setattr(Pacs, "store", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        pacs.store_series(SHIPPED)
    assert pacs._orthanc_id(uid) is None


@pytest.mark.pacs
@pytest.mark.slow
def test_the_command_line_pushes_lists_and_pulls(server, pacs, tmp_path):
    local = pydicom.dcmread(next(SHIPPED.iterdir()), stop_before_pixels=True)
    env = {"MEDSR_PACS_URL": server["url"], "MEDSR_PACS_CREDENTIALS": server["credentials"]}
    try:
        push = cli("--push", str(SHIPPED), env=env)
        assert push.returncode == 0, push.stderr
        assert push.stdout == f"dicomweb: stored series {local.SeriesInstanceUID} (19 instances)\n"
        studies = cli("--studies", env=env)
        assert studies.stdout.startswith(f"{local.StudyInstanceUID}\tProstateX-0000\t"), studies.stdout
        listed = cli("--study", local.StudyInstanceUID, "--series", "t2_.*", env=env)
        assert listed.stdout == f"{local.SeriesInstanceUID}\t4\t19\tt2_tse_tra\n"
        pull = cli("--study", local.StudyInstanceUID, "--series", "t2_.*", "--pull", str(tmp_path), env=env)
        assert pull.returncode == 0, pull.stderr
        assert len(list((tmp_path / f"4_t2_tse_tra_{local.SeriesInstanceUID}").iterdir())) == 19
        usage = cli("--pull", str(tmp_path), env=env)
        assert usage.returncode == 2
        assert usage.stderr == "dicomweb: error: give one of --studies, --study UID or --push DIR\n"
    finally:
        pacs.delete_series(local.SeriesInstanceUID)


@pytest.mark.pacs
@pytest.mark.slow
def test_each_failure_is_one_line_without_the_password(server, tmp_path):
    password = read_credentials(server["credentials"])[1]
    wrong = tmp_path / "wrong"
    wrong.write_text("medsr:not-the-password\n")
    wrong.chmod(0o600)
    dead = f"http://127.0.0.1:{free_port()}"
    cases = {
        "the PACS refused the user and password (HTTP 401)":
            (["--studies"], {"MEDSR_PACS_URL": server["url"], "MEDSR_PACS_CREDENTIALS": str(wrong)}),
        "the PACS asks for a user and password (HTTP 401)":
            (["--studies"], {"MEDSR_PACS_URL": server["url"]}),
        "no study 1.2.3.4 on the PACS":
            (["--study", "1.2.3.4"], {"MEDSR_PACS_URL": server["url"],
                                                "MEDSR_PACS_CREDENTIALS": server["credentials"]}),
        f"{dead}: cannot reach the PACS (Connection refused)":
            (["--url", dead, "--studies"], {"MEDSR_PACS_CREDENTIALS": server["credentials"]}),
    }
    for expected, (args, env) in cases.items():
        env = {"MEDSR_PACS_CREDENTIALS": "", "MEDSR_PACS_URL": "", **env}
        proc = cli(*args, env=env)
        assert proc.returncode == 2, (expected, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("dicomweb: error: "), proc.stderr
        assert expected in proc.stderr
        assert password not in proc.stderr + proc.stdout


# The client's parts that need no server -----------------------------------------------------------

class _Failing(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"Message": "Internal error\nin the database", "Details": "x" * 500}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_server_error_is_one_line_with_its_reason():
    httpd, url = serving(_Failing)
    try:
        with pytest.raises(PacsError) as err:
            Pacs(url, "medsr", "secret-password").studies()
    finally:
        httpd.shutdown()
        httpd.server_close()
    message = str(err.value)
    assert message == (f"{url}: the PACS answered HTTP 500 to GET /dicom-web/studies "
                       "(Internal error in the database)")


class _CutShort(http.server.BaseHTTPRequestHandler):
    """A WADO-RS answer that promises more than it sends, then closes."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", 'multipart/related; type="application/dicom"; boundary=b')
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * 5000)

    def log_message(self, *args):
        pass


def serving(handler):
    httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def test_a_fetch_cut_short_leaves_no_folder(tmp_path):
    httpd, url = serving(_CutShort)
    try:
        series = Series(study="1.2", uid="1.2.3", description="t2", number=4, modality="MR", instances=19)
        with pytest.raises(PacsError) as err:
            Pacs(url, "medsr", "x").fetch_series(series, tmp_path / "out")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert str(err.value) == (f"{url}: GET /dicom-web/studies/1.2/series/1.2.3: the PACS's answer "
                              "ended before its last part")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary


def test_credentials_open_to_others_or_in_the_url_are_refused_unread(tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text("medsr:secret-password\n")
    creds.chmod(0o644)
    with pytest.raises(PacsError, match=r"open to other users \(mode 644\): chmod 600 it") as err:
        read_credentials(creds)
    assert "secret-password" not in str(err.value)
    creds.chmod(0o600)
    assert read_credentials(creds) == ("medsr", "secret-password")
    creds.write_text("no colon here\n")
    with pytest.raises(PacsError, match="one line, user:password"):
        read_credentials(creds)
    with pytest.raises(PacsError, match="the PACS URL holds a user or password") as err:
        Pacs("http://medsr:secret-password@127.0.0.1:8042")
    assert "secret-password" not in str(err.value)
    assert "secret-password" not in repr(Pacs("http://127.0.0.1:8042", "medsr", "secret-password"))
    env = {"MEDSR_PACS_URL": "http://127.0.0.1:8042", "MEDSR_PACS_USER": "u", "MEDSR_PACS_PASSWORD": "p"}
    assert connect(env=env)._auth == "Basic dTpw"  # base64("u:p")


class _Trickle:
    """A stream that hands out ``size`` bytes at a time, as a slow network does."""

    def __init__(self, data, size):
        self.data, self.size = data, size

    def read(self, _n):
        chunk, self.data = self.data[: self.size], self.data[self.size:]
        return chunk


@pytest.mark.parametrize("size", [1, 7, 1 << 20])
def test_multipart_parts_are_split_whatever_the_chunks(tmp_path, size):
    boundary = b"b0undary"
    parts = [b"\r\n--b0undar", b"", bytes(range(256)) * 3]  # a near-delimiter, an empty part
    body = b"preamble\r\n" + b"".join(
        b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts
    ) + b"--" + boundary + b"--\r\nepilogue"
    count = MultipartWriter(boundary, tmp_path, "test").feed_all(_Trickle(body, size))
    assert count == 3
    assert [(tmp_path / f"{i:05d}.part").read_bytes() for i in (1, 2, 3)] == parts


def test_a_multipart_answer_cut_short_is_an_error(tmp_path):
    body = b"--b\r\n\r\nsome bytes"
    with pytest.raises(PacsError, match="ended before its last part"):
        MultipartWriter(b"b", tmp_path, "GET /x").feed_all(_Trickle(body, 4))


class _Breaking:
    """A stream whose connection breaks after the first read."""

    def __init__(self):
        self.reads = 0

    def read(self, _n):
        self.reads += 1
        if self.reads > 1:
            raise ConnectionResetError(104, "Connection reset by peer")
        return b"--b\r\n\r\nsome bytes"


def test_a_connection_broken_midway_is_one_line(tmp_path):
    with pytest.raises(PacsError) as err:
        MultipartWriter(b"b", tmp_path, "GET /x").feed_all(_Breaking())
    assert str(err.value) == "GET /x: the PACS stopped answering midway (Connection reset by peer)"
