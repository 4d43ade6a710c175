"""Secrets read from files, as Kubernetes mounts a Secret (``NOCTIS_S3_SECRET_KEY_FILE``).

A setting such as ``s3_secret_key`` can be given directly or through a companion
setting ``s3_secret_key_file`` that names a file containing the value. One final
newline of the file is dropped. Giving both is an error, because it is unclear which one
wins. Error messages name the file and the setting, never the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _is_set(value: Any) -> bool:
    return value is not None and value != ""


def read_secret_files(values: dict[str, Any], file_settings: Mapping[str, str]) -> dict[str, Any]:
    """Return ``values`` with each secret whose ``*_file`` setting is given read from its file.

    ``file_settings`` maps a secret's setting name to the name of its file setting.
    Raises ValueError when a file cannot be read or both settings are given.
    """
    result = dict(values)
    for name, file_name in file_settings.items():
        path = result.get(file_name)
        if not _is_set(path):
            continue
        if _is_set(result.get(name)):
            raise ValueError(
                f"both NOCTIS_{name.upper()} and NOCTIS_{file_name.upper()} are set; "
                "set only one of them"
            )
        try:
            text = Path(str(path)).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(
                f"cannot read NOCTIS_{file_name.upper()} {str(path)!r}: "
                f"{getattr(error, 'strerror', None) or type(error).__name__}; mount the "
                "secret there or unset the setting"
            ) from None
        result[name] = text.removesuffix("\n").removesuffix("\r")
    return result
