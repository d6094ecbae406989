"""The DICOMweb client: :class:`Pacs` (see the package's docstring)."""
import base64
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from core.atomic import staging_dir
from data_prep.cohort.plan import description_matches, series_pattern
from . import multipart
from .credentials import ENV_CREDENTIALS, ENV_URL, credentials_from_env
from .errors import PacsError

__all__ = ["Series", "Pacs", "connect"]

DICOMWEB_ROOT = "/dicom-web"  # Orthanc's default ("DicomWeb": {"Root"})
TIMEOUT_S = 120  # per socket operation: a store of a large series waits on the server's writes
STOW_BATCH_BYTES = 64 << 20  # one STOW-RS request carries up to this much (one file at least)

# DICOM JSON (PS3.18 F.2) tags
STUDY_UID, SERIES_UID, REFERENCED_SOP_UID = "0020000D", "0020000E", "00081155"
SERIES_DESCRIPTION, SERIES_NUMBER, MODALITY = "0008103E", "00200011", "00080060"
SERIES_INSTANCES = "00201209"  # NumberOfSeriesRelatedInstances
FAILED_SOPS, REFERENCED_SOPS, FAILURE_REASON = "00081198", "00081199", "00081197"
UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")


@dataclass(frozen=True)
class Series:
    """One series as QIDO-RS lists it; ``attributes`` is its whole DICOM JSON."""
    study: str
    uid: str
    description: str
    number: int | None
    modality: str
    instances: int | None
    attributes: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, study, item):
        number = _value(item, SERIES_NUMBER)
        count = _value(item, SERIES_INSTANCES)
        return cls(study=_value(item, STUDY_UID) or study, uid=_value(item, SERIES_UID) or "",
                   description=_value(item, SERIES_DESCRIPTION) or "",
                   number=None if number is None else int(number),
                   modality=_value(item, MODALITY) or "",
                   instances=None if count is None else int(count), attributes=item)

    def folder_name(self):
        """A folder name that says which series it is: ``<number>_<description>_<uid>``."""
        words = re.sub(r"[^A-Za-z0-9.+-]+", "_", self.description).strip("_") or "series"
        return f"{self.number if self.number is not None else 'x'}_{words[:40]}_{self.uid}"


def _value(item, tag):
    """The first value of ``tag`` in a DICOM JSON object, None when absent."""
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _check_uid(uid, what):
    if not isinstance(uid, str) or not UID_RE.fullmatch(uid) or len(uid) > 64:
        raise PacsError(f"{what} {uid!r} is not a DICOM UID (digits and dots, at most 64 characters)")
    return uid


def connect(url=None, env=None, timeout=TIMEOUT_S):
    """A :class:`Pacs` at ``url`` (default: MEDSR_PACS_URL) with the credentials of the
    environment (:func:`credentials_from_env`)."""
    env = os.environ if env is None else env
    url = url or env.get(ENV_URL)
    if not url:
        raise PacsError(f"no PACS given: set {ENV_URL}=http://host:port (make pacs-up prints it)")
    user, password = credentials_from_env(env)
    return Pacs(url, user, password, timeout=timeout)


# ---------------------------------------------------------------------------------- the client

class Pacs:
    """A DICOMweb server at ``url`` (``http://host:port``; the DICOMweb root is ``root`` below it)."""

    def __init__(self, url, user=None, password=None, *, root=DICOMWEB_ROOT, timeout=TIMEOUT_S):
        parts = urllib.parse.urlsplit(str(url))
        if parts.username is not None or parts.password is not None:
            # Not echoed: the URL holds a secret.
            raise PacsError(f"the PACS URL holds a user or password: give them in {ENV_CREDENTIALS} "
                            f"(a file of one line user:password) instead")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PacsError(f"{url}: not a PACS URL (http://host:port)")
        self.url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.root = self.url + "/" + root.strip("/")
        self.timeout = timeout
        self._auth = None
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._auth = f"Basic {token}"

    def __repr__(self):
        return f"Pacs({self.url!r}, {'with' if self._auth else 'without'} credentials)"

    # ---- HTTP

    def _open(self, method, url, body=None, headers=(), not_found=None):
        """The response to one request; each failure as one PacsError line. ``not_found``: the
        line for a 404 (else the generic HTTP error line)."""
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
        if self._auth:
            request.add_unredirected_header("Authorization", self._auth)
        what = f"{method} {urllib.parse.urlsplit(url).path}"
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                raise self._http_error(exc, what, not_found) from None
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
            raise PacsError(f"{self.url}: cannot reach the PACS ({reason})") from None
        except (TimeoutError, ConnectionError) as exc:
            raise PacsError(f"{self.url}: the PACS stopped answering during {what} "
                            f"({exc.strerror or type(exc).__name__})") from None

    def _http_error(self, exc, what, not_found):
        if exc.code == 401:
            if not self._auth:
                return PacsError(f"{self.url}: the PACS asks for a user and password (HTTP 401): set "
                                 f"{ENV_CREDENTIALS}=<file of one line user:password> (make pacs-up prints it)")
            return PacsError(f"{self.url}: the PACS refused the user and password (HTTP 401)")
        if exc.code == 403:
            return PacsError(f"{self.url}: the PACS refused {what} (HTTP 403: not allowed for this "
                             "user or from this machine)")
        if exc.code == 404 and not_found:
            return PacsError(f"{self.url}: {not_found}")
        return PacsError(f"{self.url}: the PACS answered HTTP {exc.code} to {what}{_reason(exc)}")

    def _json(self, method, path, body=None, headers=(), not_found=None, base=None):
        url = (self.root if base is None else base) + path
        with self._open(method, url, body, [("Accept", "application/dicom+json, application/json"),
                                            *headers], not_found) as response:
            text = multipart.read_answer(response, -1, f"{self.url}: {method} {path}")
        try:
            return json.loads(text) if text.strip() else []
        except ValueError:
            raise PacsError(f"{self.url}: the PACS answered {method} {path} with something "
                            "other than JSON") from None

    # ---- QIDO-RS

    def studies(self, **match):
        """The studies QIDO-RS lists, as DICOM JSON; ``match``: attribute=value filters
        (e.g. StudyInstanceUID=..., PatientID=...)."""
        query = urllib.parse.urlencode(match)
        return self._json("GET", "/studies" + (f"?{query}" if query else ""))

    def require_study(self, study):
        """PacsError unless the server holds ``study``."""
        _check_uid(study, "study")
        if not self.studies(StudyInstanceUID=study):
            raise PacsError(f"{self.url}: no study {study} on the PACS")

    def series(self, study, description=None, uid=None):
        """The series of ``study`` (:class:`Series`, by SeriesNumber), those whose
        SeriesDescription ``description`` (a regular expression) matches when given, by the
        cohort's rule (``data_prep.cohort.plan.description_matches``: case-insensitive, searched,
        so ``t2`` finds ``t2_tse_tra``), the one whose SeriesInstanceUID is ``uid`` when given.
        PacsError when the study is unknown."""
        self.require_study(study)
        pattern = _compile(description)
        query = {"includefield": "all"}
        if uid is not None:
            query["SeriesInstanceUID"] = _check_uid(uid, "series")
        items = self._json("GET", f"/studies/{study}/series?{urllib.parse.urlencode(query)}",
                           not_found=f"no study {study} on the PACS")
        found = [Series.from_json(study, item) for item in items]
        if pattern is not None:
            found = [s for s in found if description_matches(pattern, s.description)]
        return sorted(found, key=lambda s: (s.number is None, s.number or 0, s.uid))

    # ---- WADO-RS

    def fetch_series(self, series, dest):
        """The instances of ``series`` (a :class:`Series`) as DICOM files
        ``<SOPInstanceUID>.dcm`` in the new folder ``dest`` (it must not exist, or be empty):
        written into a temporary folder beside it, renamed into place once all are in and
        their count is the one QIDO-RS gave. Returns the files."""
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise PacsError(f"{dest}: exists and is not an empty folder (a pull writes a new one)")
        path = f"/studies/{_check_uid(series.study, 'study')}/series/{_check_uid(series.uid, 'series')}"
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        with staging_dir(dest) as tmp:
            with self._open("GET", self.root + path, headers=[("Accept", accept)],
                            not_found=f"no series {series.uid} in study {series.study}") as response:
                count = multipart.save_parts(response, Path(tmp), f"{self.url}: GET {urllib.parse.urlsplit(self.root).path}{path}")
            if series.instances is not None and count != series.instances:
                raise PacsError(f"{self.url}: series {series.uid} sent {count} of its "
                                f"{series.instances} instances")
            _name_by_sop_uid(Path(tmp))
            os.replace(tmp, dest)
        return sorted(dest.iterdir())

    def metadata(self, series):
        """Each instance of ``series`` as DICOM JSON without its pixel data (WADO-RS metadata):
        every attribute, where QIDO-RS lists only a few (e.g. the ImageType, DerivationDescription
        and SourceImageSequence that tell a derived series from its source)."""
        path = f"/studies/{_check_uid(series.study, 'study')}/series/{_check_uid(series.uid, 'series')}/metadata"
        return self._json("GET", path, not_found=f"no series {series.uid} in study {series.study}")

    def pull(self, study, description, dest):
        """Each series of ``study`` whose SeriesDescription matches ``description`` (a regular
        expression), fetched into ``dest/<Series.folder_name()>``: [(Series, folder)]. PacsError
        when none matches."""
        found = self.series(study, description)
        if not found:
            raise PacsError(f"{self.url}: no series of study {study} has a SeriesDescription "
                            f"matching {description!r}")
        pulled = []
        for s in found:
            folder = Path(dest) / s.folder_name()
            self.fetch_series(s, folder)
            pulled.append((s, folder))
        return pulled

    # ---- STOW-RS

    def store(self, files, study=None):
        """Send ``files`` (DICOM Part 10) by STOW-RS, in requests of up to STOW_BATCH_BYTES;
        returns the SOPInstanceUIDs the server stored. PacsError when it refuses any."""
        files = [Path(f) for f in files]
        stored = []
        path = "/studies" + (f"/{_check_uid(study, 'study')}" if study else "")
        for batch in _batches(files, STOW_BATCH_BYTES):
            headers, body = multipart.request(batch)
            answer = self._json("POST", path, body, headers)
            stored += self._stored_uids(answer, batch)
        return stored

    def _stored_uids(self, answer, batch):
        answer = answer if isinstance(answer, dict) else {}
        failed = (answer.get(FAILED_SOPS) or {}).get("Value") or []
        if failed:
            reason = _value(failed[0], FAILURE_REASON)
            raise PacsError(f"{self.url}: the PACS refused {len(failed)} of {len(batch)} files "
                            f"(first: SOP instance {_value(failed[0], REFERENCED_SOP_UID)}, failure reason "
                            f"{reason}; PS3.18 table I.2-1)")
        stored = [_value(item, REFERENCED_SOP_UID) for item in (answer.get(REFERENCED_SOPS) or {}).get("Value") or []]
        if len(stored) != len(batch):
            raise PacsError(f"{self.url}: the PACS acknowledged {len(stored)} of {len(batch)} files sent")
        return stored

    def store_series(self, folder):
        """Store the DICOM files of ``folder`` all or nothing: a series that was not on the
        server before is deleted again when the store fails or is interrupted midway, or when the
        server then lists fewer instances than were sent. Returns {SeriesInstanceUID: count}."""
        from data_prep.io.dicom import dcmread
        from data_prep.io.dicom_series import series_files
        if not Path(folder).is_dir():
            raise PacsError(f"{folder}: not a folder (a store sends a folder's DICOM files)")
        files = series_files(folder)
        sops = {}  # series uid -> its SOP instance uids
        for f in files:
            ds = dcmread(str(f), f, stop_before_pixels=True,
                         specific_tags=["SeriesInstanceUID", "SOPInstanceUID"])
            sops.setdefault(str(ds.get("SeriesInstanceUID", "")), set()).add(str(ds.get("SOPInstanceUID", "")))
        new = [uid for uid in sops if not self._orthanc_id(uid)]
        try:
            self.store(files)
            for uid in new:
                listed = self._orthanc_instances(uid)
                if listed != len(sops[uid]):
                    raise PacsError(f"{self.url}: series {uid} holds {listed} of the "
                                    f"{len(sops[uid])} instances stored")
        except BaseException:
            for uid in new:
                self._delete_quietly(uid)
            raise
        return {uid: len(s) for uid, s in sops.items()}

    # ---- Orthanc's REST API (DICOMweb has no delete)

    def _orthanc_id(self, series_uid):
        """Orthanc's identifier of the series ``series_uid``, None when it holds none."""
        found = self._json("POST", "/tools/lookup", _check_uid(series_uid, "series").encode(),
                           [("Content-Type", "text/plain")], base=self.url)
        return next((f["ID"] for f in found if f.get("Type") == "Series"), None)

    def _orthanc_instances(self, series_uid):
        oid = self._orthanc_id(series_uid)
        return 0 if oid is None else len(self._json("GET", f"/series/{oid}/instances", base=self.url))

    def delete_series(self, series_uid):
        """Delete the series ``series_uid`` from the server (Orthanc's DELETE /series/{id});
        True if it was there."""
        oid = self._orthanc_id(series_uid)
        if oid is None:
            return False
        self._json("DELETE", f"/series/{oid}", base=self.url)
        return True

    def _delete_quietly(self, series_uid):
        """delete_series while another failure is on its way up: that one is the one reported."""
        try:
            self.delete_series(series_uid)
        except (PacsError, OSError):
            pass


# ---------------------------------------------------------------------------------- helpers

def _compile(description):
    if description is None:
        return None
    try:
        return series_pattern(description)
    except re.error as exc:
        raise PacsError(f"--series {description!r} is not a regular expression ({exc})") from None


def _reason(exc):
    """The server's own reason for an HTTP error, one short line (Orthanc answers JSON with a
    "Message"), or nothing."""
    try:
        body = json.loads(exc.read(4096) or b"{}")
    except (ValueError, OSError):
        return ""
    message = body.get("Message") if isinstance(body, dict) else None
    return f" ({' '.join(str(message).split())[:200]})" if message else ""


def _batches(files, limit):
    batch, size = [], 0
    for f in files:
        n = f.stat().st_size
        if batch and size + n > limit:
            yield batch
            batch, size = [], 0
        batch.append(f)
        size += n
    if batch:
        yield batch


def _name_by_sop_uid(folder):
    """Rename each ``<n>.part`` in ``folder`` to ``<SOPInstanceUID>.dcm`` (a name the server sent
    is used only when it is a UID)."""
    from data_prep.io.dicom import dcmread
    for part in sorted(folder.glob("*.part")):
        ds = dcmread(str(part), part, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        uid = str(ds.get("SOPInstanceUID", ""))
        name = f"{uid}.dcm" if UID_RE.fullmatch(uid) and len(uid) <= 64 else f"{part.stem}.dcm"
        os.replace(part, folder / name)
