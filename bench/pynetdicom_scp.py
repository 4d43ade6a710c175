"""A bare pynetdicom Storage SCP for the benchmarks.

``python -m bench.pynetdicom_scp PORT FOLDER [--event-driven]``

It keeps each received dataset in the file that pynetdicom spools it into and does
nothing else: no parse, no index, no sync to disk. Its rate is what pynetdicom itself
allows, the ceiling of any SCP built on it. With ``--event-driven`` its reactor threads
get the waits that Noctis gives them (:mod:`noctis_ingest_scp.reactors`), which makes it
the ceiling of Noctis's DIMSE path.
"""

from __future__ import annotations

import os
import sys
import tempfile

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from noctis_ingest_scp.reactors import EventDrivenReactors, install_clock

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
    handlers: list[EventHandlerType] = [(evt.EVT_C_STORE, handle_store)]
    if "--event-driven" in sys.argv[3:] and install_clock():
        reactors = EventDrivenReactors()
        handlers += [
            (evt.EVT_CONN_OPEN, reactors.handle_connection_open),
            (evt.EVT_CONN_CLOSE, reactors.handle_connection_close),
        ]
    ae.start_server(("127.0.0.1", port), evt_handlers=handlers)


if __name__ == "__main__":
    main()
