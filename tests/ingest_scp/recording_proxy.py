"""A loopback TCP proxy that records the C-STORE datasets a DICOM peer sends.

Tests put it between a dcmtk sender and the SCP to learn the exact dataset bytes on
the wire (PS3.8 9.3.5 P-DATA-TF, E.2 message control header), because a sender may
re-encode a file before sending it.
"""

from __future__ import annotations

import socket
import struct
import threading
from io import BytesIO

from pydicom.filereader import read_dataset

P_DATA_TF = 0x04
C_STORE_RQ = 0x0001


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = connection.recv(min(size, 1 << 16))
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


class RecordingProxy:
    """Relays connections on ``port`` to the SCP on ``target_port``.

    ``datasets`` maps the Affected SOP Instance UID of each C-STORE request to the
    dataset bytes sent with it.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.datasets: dict[str, bytes] = {}
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def close(self) -> None:
        self._listener.close()
        for thread in self._threads:
            thread.join(10)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            upstream = threading.Thread(
                target=self._relay_requests, args=(client, server), daemon=True
            )
            downstream = threading.Thread(
                target=self._relay_raw, args=(server, client), daemon=True
            )
            self._threads += [upstream, downstream]
            upstream.start()
            downstream.start()

    @staticmethod
    def _relay_raw(source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(1 << 16):
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for connection in (source, target):
                connection.close()

    def _relay_requests(self, client: socket.socket, server: socket.socket) -> None:
        command = bytearray()
        dataset = bytearray()
        sop_instance_uid = ""
        try:
            while True:
                header = _receive_exactly(client, 6)
                pdu_type, _, length = struct.unpack(">BBI", header)
                body = _receive_exactly(client, length)
                server.sendall(header + body)
                if pdu_type != P_DATA_TF:
                    continue
                offset = 0
                while offset < len(body):
                    (item_length,) = struct.unpack(">I", body[offset : offset + 4])
                    control = body[offset + 5]
                    fragment = body[offset + 6 : offset + 4 + item_length]
                    offset += 4 + item_length
                    if control & 0x01:
                        command += fragment
                        if control & 0x02:
                            decoded = read_dataset(
                                BytesIO(bytes(command)), is_implicit_VR=True, is_little_endian=True
                            )
                            command.clear()
                            if decoded.get("CommandField") == C_STORE_RQ:
                                sop_instance_uid = str(decoded.AffectedSOPInstanceUID)
                    else:
                        dataset += fragment
                        if control & 0x02:
                            with self._lock:
                                self.datasets[sop_instance_uid] = bytes(dataset)
                            dataset.clear()
        except (OSError, ConnectionError):
            pass
        finally:
            for connection in (client, server):
                connection.close()
