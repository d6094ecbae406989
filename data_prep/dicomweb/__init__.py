"""A small DICOMweb client for a PACS (Orthanc with its DICOMweb plugin: `make pacs-up`,
docs/pacs.md), on the standard library's urllib: no new dependency.

- QIDO-RS: :meth:`Pacs.studies`, :meth:`Pacs.series` (a study's series, SeriesDescription
  matched by a regular expression here, on the client: servers match wildcards only);
- WADO-RS: :meth:`Pacs.fetch_series` writes a series' instances as DICOM files into a new folder
  (the multipart/related answer split as it streams in, never held whole in memory);
  :meth:`Pacs.pull` does that for each series of a study that matches; :meth:`Pacs.metadata`
  gives every attribute of each instance (QIDO-RS lists a few), without the pixel data;
- STOW-RS: :meth:`Pacs.store` sends files; :meth:`Pacs.store_series` sends a folder's series all
  or nothing (a failure midway deletes the series it was adding);
- :meth:`Pacs.delete_series` (Orthanc's REST API: DICOMweb has no delete).

Credentials (:mod:`.credentials`): never on a command line, never in a message; a URL that holds
a user or password is refused. Each failure is one :class:`PacsError` line: an unreachable server,
refused credentials (401), an unknown study, an HTTP error with the server's own short reason.

Pull, run, push back is a few calls::

    pacs = connect()                                  # MEDSR_PACS_URL, MEDSR_PACS_CREDENTIALS
    for series, folder in pacs.pull(study, "t2_.*", work / "in"):
        run(folder, work / "out" / folder.name)       # writes the derived series' files
        pacs.store_series(work / "out" / folder.name)  # all or nothing
"""
from .client import Pacs, Series, connect
from .credentials import (ENV_CREDENTIALS, ENV_PASSWORD, ENV_URL, ENV_USER, credentials_from_env,
                          read_credentials)
from .errors import PacsError

__all__ = ["Pacs", "Series", "connect", "PacsError", "read_credentials", "credentials_from_env",
           "ENV_URL", "ENV_CREDENTIALS", "ENV_USER", "ENV_PASSWORD"]
