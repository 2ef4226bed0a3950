#!/usr/bin/env bash
# Install the OHIF viewer that `agora serve` serves at /viewer/ (DESIGN.md §2)
# and, with --test, the playwright-core package the browser test drives
# Debian's chromium with.  Idempotent: a second run checks two marker files
# and returns at once.
#
# Usage: tools/install-viewer.sh [--test]
#
# Where the viewer comes from: the npm package @ohif/app is OHIF's own
# production build (its "files" are dist/ and README.md: index.html, the
# webpack bundles, the codec .wasm files).  `npm pack` fetches only that
# tarball, not the package's ~40 build-time dependencies; npm checks it
# against the registry's sha512 and we check it against the one pinned below,
# so a changed upload cannot slip in.
#
# What is changed at install time, and why: the bundle is built for the site
# root (webpack publicPath "/", absolute "/..." URLs in index.html, the CSS
# and the web manifest) and Agora serves it under /viewer/.  OHIF reads
# window.PUBLIC_URL and config.routerBasename at run time, but the chunk
# loader's publicPath is a string literal in every webpack runtime, so the
# prefix is rewritten once here rather than on every response.  The inline
# <script> blocks of index.html move into files so the viewer's
# Content-Security-Policy needs no 'unsafe-inline' for scripts.  The bundle's
# app-config.js (pointing at OHIF's public demo server) is removed: Agora
# generates /viewer/app-config.js itself.  Last, text and wasm files get a
# gzip sibling (FILE.gz) that the server sends to clients accepting gzip;
# the bundle is tens of MB.
#
# The result: third_party/ohif/<version>/ and the link third_party/ohif/current
# that `agora serve` looks for (gitignored).
set -euo pipefail

OHIF_VERSION=3.13.2
OHIF_INTEGRITY=sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
BASE=/viewer/

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# playwright-core's version and integrity are pinned in tests/browser/
# package.json and package-lock.json (npm ci checks the sha512).
PLAYWRIGHT_VERSION=$(sed -n 's/.*"playwright-core": "\([^"]*\)".*/\1/p' \
                     "$ROOT/tests/browser/package.json")
OHIF_DIR=$ROOT/third_party/ohif
DEST=$OHIF_DIR/$OHIF_VERSION
MARK=.agora-install

want_test=0
for a in "$@"; do
    case $a in
    --test) want_test=1 ;;
    *) echo "usage: $0 [--test]" >&2; exit 2 ;;
    esac
done

viewer_ok() {
    [ -f "$DEST/$MARK" ] && grep -qxF "$OHIF_INTEGRITY" "$DEST/$MARK" &&
        [ "$(readlink "$OHIF_DIR/current" 2>/dev/null)" = "$OHIF_VERSION" ]
}

playwright_ok() {
    local pj=$ROOT/tests/browser/node_modules/playwright-core/package.json
    [ -f "$pj" ] && grep -q "\"version\": \"$PLAYWRIGHT_VERSION\"" "$pj"
}

if viewer_ok && { [ $want_test = 0 ] || playwright_ok; }; then
    exit 0
fi

# Node and npm: use whatever is installed (a nodesource nodejs bundles its
# own npm; installing Debian's npm next to it would conflict), otherwise
# Debian's packages.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing: nodejs npm"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
export npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false

sha512_of() {
    node -e 'const c = require("crypto"), f = require("fs");
             process.stdout.write("sha512-" + c.createHash("sha512")
                 .update(f.readFileSync(process.argv[1])).digest("base64"));' "$1"
}

# Rewrite the unpacked dist/ (directory $1) to be served under $BASE.  Each
# rule must match at least once: a new OHIF layout fails loudly here instead
# of serving a viewer whose chunks 404.
rewrite_for_base() {
    BASE=$BASE node - "$1" <<'EOF'
const fs = require('fs'), path = require('path');
const dir = process.argv[2], base = process.env.BASE;
const rd = f => fs.readFileSync(path.join(dir, f), 'utf8');
const wr = (f, s) => fs.writeFileSync(path.join(dir, f), s);
function replaceAll(s, from, to, what) {
    const n = s.split(from).length - 1;
    if (n === 0) {
        throw new Error('install-viewer: no ' + what + ' found');
    }
    return [s.split(from).join(to), n];
}
// 1. webpack's publicPath in every runtime (main bundle and workers).
let runtimes = 0;
for (const f of fs.readdirSync(dir).filter(f => f.endsWith('.js'))) {
    const s = rd(f), lit = '__webpack_require__.p = "/";';
    if (s.includes(lit)) {
        wr(f, s.split(lit).join('__webpack_require__.p = "' + base + '";'));
        runtimes++;
    }
}
if (runtimes === 0) {
    throw new Error('install-viewer: no webpack publicPath found');
}
// 2. absolute URLs the main bundle builds by hand.
const app = fs.readdirSync(dir).find(f => /^app\.bundle\..*\.js$/.test(f));
if (!app) {
    throw new Error('install-viewer: no app.bundle.*.js');
}
wr(app, replaceAll(rd(app), "'/dicom-microscopy-viewer/",
                   "'" + base + 'dicom-microscopy-viewer/',
                   'microscopy viewer path')[0]);
// 3. stylesheets: url(/font.woff2).
for (const f of fs.readdirSync(dir).filter(f => f.endsWith('.css'))) {
    wr(f, rd(f).split('url(/').join('url(' + base));
}
// 4. the web manifest's icons.
wr('manifest.json', replaceAll(rd('manifest.json'), '"/assets/',
                               '"' + base + 'assets/', 'manifest icons')[0]);
// 5. index.html: PUBLIC_URL, absolute href/src, inline scripts to files.
let html = rd('index.html');
html = replaceAll(html, 'window.PUBLIC_URL="/"',
                  'window.PUBLIC_URL="' + base + '"', 'PUBLIC_URL')[0];
html = replaceAll(html, ' href="/', ' href="' + base, 'href')[0];
html = replaceAll(html, ' src="/', ' src="' + base, 'src')[0];
let i = 0;
html = html.replace(/<script>([\s\S]*?)<\/script>/g, (m, body) => {
    const name = 'agora-inline-' + (++i) + '.js';
    wr(name, body + '\n');
    return '<script src="' + base + name + '"></script>';
});
if (i === 0 || /<script>/.test(html)) {
    throw new Error('install-viewer: inline scripts of index.html not moved');
}
wr('index.html', html);
// 6. files Agora does not serve from the bundle.
for (const f of ['app-config.js', '_headers', '_redirects', 'serve.json']) {
    fs.rmSync(path.join(dir, f), {force: true});
}
EOF
}

install_viewer() {
    local tmp
    tmp=$(mktemp -d "$OHIF_DIR/.tmp.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo "installing: OHIF viewer $OHIF_VERSION (@ohif/app from npm)"
    (cd "$tmp" && npm pack --silent "@ohif/app@$OHIF_VERSION" >/dev/null)
    local tgz=$tmp/ohif-app-$OHIF_VERSION.tgz got
    got=$(sha512_of "$tgz")
    if [ "$got" != "$OHIF_INTEGRITY" ]; then
        echo "install-viewer: @ohif/app@$OHIF_VERSION has integrity $got," \
             "expected $OHIF_INTEGRITY" >&2
        exit 1
    fi
    mkdir "$tmp/x"
    tar -xzf "$tgz" -C "$tmp/x" --no-same-owner --no-same-permissions \
        package/dist
    local dist=$tmp/x/package/dist
    if [ -n "$(find "$dist" -type l -print -quit)" ]; then
        echo "install-viewer: the package contains symbolic links" >&2
        exit 1
    fi
    rewrite_for_base "$dist"
    # -n: no name or time stamp in the .gz, so a reinstall is byte-identical.
    find "$dist" -type f -size +1k \( -name '*.js' -o -name '*.mjs' \
        -o -name '*.css' -o -name '*.html' -o -name '*.json' -o -name '*.map' \
        -o -name '*.svg' -o -name '*.wasm' -o -name '*.txt' -o -name '*.jsonc' \) \
        -print0 | xargs -0 -r -n 16 -P "$(nproc)" gzip -6 -k -n -f
    echo "$OHIF_INTEGRITY" >"$dist/$MARK"
    chmod -R a+rX,go-w "$dist"
    rm -rf "$DEST"
    mv "$dist" "$DEST"
    ln -sfn "$OHIF_VERSION" "$OHIF_DIR/current.tmp"
    mv -T "$OHIF_DIR/current.tmp" "$OHIF_DIR/current"
    rm -rf "$tmp"
    trap - EXIT
    echo "OHIF viewer $OHIF_VERSION installed in $DEST"
}

mkdir -p "$OHIF_DIR"
if ! viewer_ok; then
    install_viewer
fi
if [ $want_test = 1 ] && ! playwright_ok; then
    echo "installing: playwright-core $PLAYWRIGHT_VERSION (tests/browser)"
    (cd "$ROOT/tests/browser" && npm ci --silent --no-audit --no-fund >/dev/null)
    playwright_ok || { echo "install-viewer: playwright-core not installed" >&2; exit 1; }
fi
