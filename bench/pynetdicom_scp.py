"""A bare pynetdicom Storage SCP for the benchmarks: ``python -m bench.pynetdicom_scp PORT FOLDER``.

It keeps each received dataset in the file that pynetdicom spools it into and does
nothing else: no parse, no index, no sync to disk. Its rate is what pynetdicom itself
allows, the ceiling of any SCP built on it, Noctis included.
"""

from __future__ import annotations

import os
import sys
import tempfile

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

MAXIMUM_ASSOCIATIONS = 32


def handle_store(event: Event) -> int:
    """Keep the spooled dataset under a name that marks it received; return Success."""
    path = os.fspath(event.dataset_path)
    os.replace(path, path + ".dcm")
    return 0x0000


def main() -> None:
    port = int(sys.argv[1])
    # pynetdicom writes each dataset into a temporary file as it arrives.
    tempfile.tempdir = sys.argv[2]
    _config.STORE_RECV_CHUNKED_DATASET = True
    ae = AE(ae_title="BENCH")
    ae.maximum_pdu_size = 0  # no limit, as Noctis sets it
    ae.maximum_associations = MAXIMUM_ASSOCIATIONS
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        ae.add_supported_context(
            context.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
    ae.add_supported_context(Verification)
    ae.start_server(("127.0.0.1", port), evt_handlers=[(evt.EVT_C_STORE, handle_store)])


if __name__ == "__main__":
    main()
