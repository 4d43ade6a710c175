#!/usr/bin/env bash
# Installs what tests/interop/test_orthanc.py needs: Debian's Orthanc server and its
# DICOMweb plugin, which puts libOrthancDicomWeb.so in /usr/share/orthanc/plugins/.
# The test runs its own Orthanc on free loopback ports and ignores the package's service.
set -euo pipefail

if ! command -v Orthanc >/dev/null 2>&1 && [ ! -x /usr/sbin/Orthanc ] \
    || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        orthanc orthanc-dicomweb >/dev/null
fi
echo "Orthanc: $(/usr/sbin/Orthanc --version | head -n 1)"
