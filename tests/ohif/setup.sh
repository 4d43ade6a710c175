#!/usr/bin/env bash
# Installs what tests/ohif/test_ohif.py needs: Debian's chromium, playwright-core (from
# package-lock.json) and the prebuilt OHIF v3 viewer (@ohif/app's dist/, version and
# sha512 pinned in package.json "ohifApp") under tests/ohif/node_modules/.
# Only the @ohif/app tarball is fetched, not its dependencies: dist/ is self-contained.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v chromium >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

npm ci --ignore-scripts --no-audit --no-fund --loglevel=error

read -r ohif_package ohif_version ohif_integrity < <(node -e '
const app = require("./package.json").ohifApp;
console.log(app.package, app.version, app.integrity);')
target="node_modules/.ohif-app/${ohif_version}"
if [ ! -f "${target}/dist/index.html" ]; then
    download="$(mktemp -d)"
    trap 'rm -rf "${download}"' EXIT
    tarball="$(cd "${download}" && npm pack "${ohif_package}@${ohif_version}" --silent)"
    actual="$(node -e '
const data = require("fs").readFileSync(process.argv[1]);
console.log("sha512-" + require("crypto").createHash("sha512").update(data).digest("base64"));
' "${download}/${tarball}")"
    if [ "${actual}" != "${ohif_integrity}" ]; then
        echo "${ohif_package}@${ohif_version}: tarball integrity ${actual} does not match" \
            "package.json ohifApp.integrity ${ohif_integrity}, so it was not installed." \
            "Check the version and its integrity with: npm view ${ohif_package}@${ohif_version} dist" >&2
        exit 1
    fi
    rm -rf "${target}"
    mkdir -p "${target}"
    tar -xzf "${download}/${tarball}" -C "${target}" --strip-components=1 package/dist
fi
echo "OHIF ${ohif_version} dist: $(du -sh "${target}/dist" | cut -f1); chromium: $(command -v chromium)"
