#!/usr/bin/env bash
# Installs the PruneFL-Edge edge agent on a Raspberry Pi (Raspberry Pi OS / Debian 12, 64-bit or 32-bit armhf):
# apt dependencies, system user prunefl, a virtualenv with the project, /etc/prunefl-edge/edge.toml (only when
# absent), /var/lib/prunefl-edge, the systemd unit. Safe to run again (upgrades the package, keeps the config).
# Run `install.sh --help`.
set -euo pipefail

PROG=$(basename "$0")
HERE=$(cd "$(dirname "$0")" && pwd)
E_USAGE=2    # bad command line
E_ENV=3      # wrong environment: not root, missing file, missing tool
E_STEP=4     # a step failed (apt, pip, systemctl)

PREFIX=/opt/prunefl-edge
ROOT=""
SOURCE="" WHEEL="" WHEELS="" CREDS="" EDGE_ID="" FEDERATION="" BROKER=""
DRY=0 APT=1 USERADD=1 SYSTEMCTL=1 START=1 PIP=1
USER_NAME=prunefl
CONF_DIR=/etc/prunefl-edge
STATE_DIR=/var/lib/prunefl-edge
UNIT_DIR=/etc/systemd/system

usage() {
    cat <<EOF
Usage: sudo $PROG [--wheel FILE | --source DIR] [options]

Installs the PruneFL-Edge edge agent as the systemd service prunefl-edge.

What to install (default: --source $(dirname "$HERE"), the checkout this script is in):
  --wheel FILE         a prunefl_edge-*.whl built for this board (fast: nothing is compiled), e.g. by
                       firmware_scripts/cross_build.sh on a PC
  --wheels DIR         install the dependencies only from the wheels in DIR, without the network
                       (cross_build.sh --deps writes them)
  --source DIR         a source tree or sdist directory: the C core is built here (needs cmake, gcc)
Configuration (used only when $CONF_DIR/edge.toml does not exist yet):
  --edge-id ID         this device's id (= the CN of its certificate)
  --federation NAME    the federation
  --broker URL         e.g. mqtts://broker.lan:8883
  --credentials DIR    copy ca.crt, client.crt, client.key (or password) from DIR, e.g. provision_broker.sh's
                       clients/<id>/, into $CONF_DIR/tls/ (always, also to rotate credentials)
Where:
  --prefix DIR         install prefix; the virtualenv is DIR/venv (default $PREFIX)
  --root DIR           lay the files down under DIR (DESTDIR-style, for tests and images); implies no chown and
                       never runs the host's systemctl (the service is enabled by its wants link in DIR); the
                       virtualenv is made by this machine's Python, so a DIR of another architecture is refused
                       unless --no-pip (then run install.sh on the device, or in DIR under qemu-user-static)
Steps to leave out:
  --no-apt             do not apt-get install dependencies
  --no-useradd         do not create the system user $USER_NAME
  --no-pip             create the virtualenv but do not install the project into it
  --no-systemctl       do not run systemctl (no daemon-reload, enable or start)
  --no-start           enable the service but do not (re)start it
  --dry-run            print what would be done, change nothing
  -h, --help           this help

Exit status: 0 ok, $E_USAGE usage error, $E_ENV wrong environment (not root, file missing), $E_STEP a step failed.
After installing: edit $CONF_DIR/edge.toml, then  sudo systemctl restart prunefl-edge
                  journalctl -u prunefl-edge -f
EOF
}

die() { local code=$1; shift; echo "$PROG: error: $*" >&2; exit "$code"; }
note() { echo "$PROG: $*"; }

# run CMD...: print it; run it unless --dry-run
run() {
    echo "+$(printf ' %q' "$@")"
    [ "$DRY" = 1 ] || "$@"
}

while [ $# -gt 0 ]; do
    opt=$1
    case $opt in
        -h|--help) usage; exit 0 ;;
        --dry-run) DRY=1 ;;
        --no-apt) APT=0 ;;
        --no-useradd) USERADD=0 ;;
        --no-pip) PIP=0 ;;
        --no-systemctl) SYSTEMCTL=0 ;;
        --no-start) START=0 ;;
        --wheel|--wheels|--source|--credentials|--edge-id|--federation|--broker|--prefix|--root)
            [ $# -ge 2 ] || die "$E_USAGE" "$opt needs a value"
            case $opt in
                --wheel) WHEEL=$2 ;; --wheels) WHEELS=$2 ;; --source) SOURCE=$2 ;; --credentials) CREDS=$2 ;; --edge-id) EDGE_ID=$2 ;;
                --federation) FEDERATION=$2 ;; --broker) BROKER=$2 ;; --prefix) PREFIX=$2 ;; --root) ROOT=$2 ;;
            esac
            shift ;;
        *) die "$E_USAGE" "unknown argument '$opt' (see --help)" ;;
    esac
    shift
done

# -- checks -----------------------------------------------------------------------------------------------------
[ -z "$WHEEL" ] || [ -z "$SOURCE" ] || die "$E_USAGE" "give --wheel or --source, not both"
if [ -z "$WHEEL" ] && [ -z "$SOURCE" ]; then SOURCE=$(dirname "$HERE"); fi
if [ -n "$WHEELS" ]; then
    [ -d "$WHEELS" ] || die "$E_ENV" "--wheels $WHEELS: not a directory"
    WHEELS=$(realpath "$WHEELS")
fi
if [ -n "$WHEEL" ]; then
    [ -f "$WHEEL" ] || die "$E_ENV" "wheel '$WHEEL' not found"
    WHEEL=$(realpath "$WHEEL")
else
    [ -f "$SOURCE/pyproject.toml" ] || die "$E_ENV" "'$SOURCE' is not a PruneFL-Edge source tree (no pyproject.toml): give --source DIR or --wheel FILE"
    SOURCE=$(realpath "$SOURCE")
fi
[[ $PREFIX = /* ]] || die "$E_USAGE" "--prefix must be an absolute path"
for v in "$EDGE_ID" "$FEDERATION"; do
    [ -z "$v" ] || [[ $v =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] || die "$E_USAGE" "'$v': ids are 1-64 of [A-Za-z0-9_.-]"
done
[ -z "$BROKER" ] || [[ $BROKER =~ ^mqtts?://[^[:space:]\"]+$ ]] || die "$E_USAGE" "--broker must be mqtt://HOST:PORT or mqtts://HOST:PORT"
if [[ $BROKER == mqtt://* ]] && [ -n "$CREDS" ] && [ -f "$CREDS/client.crt" ]; then
    die "$E_USAGE" "--broker $BROKER with client certificates from --credentials: certificates need TLS, use mqtts://"
fi
if [ -n "$CREDS" ]; then
    [ -f "$CREDS/ca.crt" ] || die "$E_ENV" "--credentials $CREDS: no ca.crt there (give provision_broker.sh's clients/<id>/)"
    { [ -f "$CREDS/client.crt" ] && [ -f "$CREDS/client.key" ]; } || [ -f "$CREDS/password" ] \
        || die "$E_ENV" "--credentials $CREDS: neither client.crt+client.key nor password there"
fi
if [ -n "$ROOT" ]; then
    ROOT=$(realpath -m "$ROOT")
    [ "$DRY" = 1 ] || mkdir -p "$ROOT"
fi
if [ "$DRY" = 0 ] && [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
    die "$E_ENV" "run as root: sudo $0 $*"
fi
MACHINE=${PRUNEFL_MACHINE:-$(uname -m)}   # (tests set it)
case $MACHINE in
    armv7l|armv6l|armhf)
        note "32-bit ARM ($MACHINE): the C core runs its portable C kernels (isa portable-c), not the NEON kernels of the 64-bit build; the 64-bit Raspberry Pi OS is faster" ;;
esac
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || die "$E_ENV" "$PY not found: sudo apt-get install python3 python3-venv"

R=$ROOT   # every path below is "$R/..."
VENV=$PREFIX/venv
# chown only on the real system, when the user exists (with --root the owners are set by the image's tools)
CHOWN=0
if [ -z "$ROOT" ] && { [ "$USERADD" = 1 ] || getent passwd "$USER_NAME" >/dev/null; }; then CHOWN=1; fi

# -- 1. apt ----------------------------------------------------------------------------------------------------
# Only what this install needs: a wheel needs Python's venv, and OpenBLAS only when its C core links it (a
# cross-built wheel does not: PF_USE_BLAS=OFF); a source build also needs the compiler, CMake and BLAS headers.
# Nothing missing: apt is not run at all (an offline Pi installing from --wheels never needs the network).
APT_GET=${APT_GET:-apt-get}            # (tests put stubs in their place)
DPKG_QUERY=${DPKG_QUERY:-dpkg-query}
wheel_links_openblas() {
    "$PY" - "$WHEEL" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if n.endswith("/libprunefl.so")]
    sys.exit(0 if any(b"libopenblas" in z.read(n) for n in names) else 1)
PY
}
if [ "$APT" = 1 ]; then
    if [ -n "$WHEEL" ]; then
        pkgs=(python3 python3-venv)
        if wheel_links_openblas; then pkgs+=(libopenblas0); fi
    else
        pkgs=(python3 python3-venv python3-pip libopenblas0 cmake gcc libc6-dev libopenblas-dev)
    fi
    missing=()
    for p in "${pkgs[@]}"; do
        # shellcheck disable=SC2016  # ${Status} is dpkg-query's field, not the shell's
        "$DPKG_QUERY" -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        note "apt: installing ${missing[*]} (needed, not installed)"
        run "$APT_GET" update -qq || die "$E_STEP" "apt-get update failed (network? /etc/apt/sources.list?); install ${missing[*]} by hand, then run again with --no-apt"
        run env DEBIAN_FRONTEND=noninteractive "$APT_GET" install -y -qq "${missing[@]}" \
            || die "$E_STEP" "apt-get install ${missing[*]} failed"
    else
        note "apt: nothing missing (${pkgs[*]} installed): apt-get not run"
    fi
fi

# -- 2. user ---------------------------------------------------------------------------------------------------
if [ "$USERADD" = 1 ]; then
    if getent passwd "$USER_NAME" >/dev/null || { [ -n "$ROOT" ] && grep -q "^$USER_NAME:" "$R/etc/passwd" 2>/dev/null; }; then
        note "user $USER_NAME exists"
    else
        run useradd ${ROOT:+--root "$ROOT"} --system --user-group --home-dir "$STATE_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "PruneFL-Edge agent" "$USER_NAME" \
            || die "$E_STEP" "useradd $USER_NAME failed"
    fi
fi

# -- 3. directories --------------------------------------------------------------------------------------------
run install -d -m 0755 "$R$PREFIX" "$R$UNIT_DIR"
run install -d -m 0750 "$R$CONF_DIR" "$R$CONF_DIR/tls" "$R$STATE_DIR" "$R$STATE_DIR/data"
if [ "$CHOWN" = 1 ]; then
    run chown "root:$USER_NAME" "$R$CONF_DIR" "$R$CONF_DIR/tls"
    run chown "$USER_NAME:$USER_NAME" "$R$STATE_DIR" "$R$STATE_DIR/data"
fi

# -- 4. virtualenv and the project -----------------------------------------------------------------------------
# With --root the virtualenv is made by this machine's Python: right for a root of this machine's architecture,
# never for an image of another one (its python would be this machine's, e.g. x86-64 in an arm64 image)
elf_machine() { od -An -j18 -N2 -tu2 "$(realpath "$1")" 2>/dev/null | tr -d ' '; }
FOREIGN=0
if [ -n "$ROOT" ] && [ ! -x "$R$VENV/bin/python" ] && [ -e "$R/usr/bin/python3" ] &&
   [ "$(elf_machine "$R/usr/bin/python3")" != "$(elf_machine "$("$PY" -c 'import sys; print(sys.executable)')")" ]; then
    FOREIGN=1
    [ "$PIP" = 0 ] || die "$E_ENV" "--root $ROOT holds another architecture's Python: the virtualenv must be made by it. Run install.sh inside the image (e.g. chroot $ROOT with qemu-user-static, or systemd-nspawn -D $ROOT), or lay down the files only with --no-pip and run install.sh on the device at first boot"
fi
if [ -x "$R$VENV/bin/python" ]; then
    note "virtualenv $VENV exists"
elif [ "$FOREIGN" = 1 ]; then
    note "virtualenv not made (the image's Python is another architecture's): run install.sh on the device, or in the image under qemu-user-static"
else
    run "$PY" -m venv "$R$VENV" || die "$E_STEP" "python3 -m venv failed: sudo apt-get install python3-venv"
fi
if [ "$PIP" = 1 ]; then
    # from source on the device itself: PF_NATIVE=ON (the default) tunes the C core for this CPU
    offline=()
    [ -z "$WHEELS" ] || offline=(--no-index --find-links "$WHEELS")
    target=$WHEEL
    if [ -z "$WHEEL" ]; then
        # the device distribution of the source tree (prunefl_common + prunefl_edge + the C core), not the server
        target=$("$SOURCE/packaging/stage.sh" edge "$(mktemp -d)/prunefl-edge") || die "$E_STEP" "staging $SOURCE failed"
    fi
    # the version installed and the one to install: a rebuilt wheel of the same version (a build outside git, or
    # PRUNEFL_VERSION fixed) is reinstalled, not skipped by pip as "already installed"
    old=""
    if [ -x "$R$VENV/bin/python" ]; then
        old=$("$R$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("prunefl-edge"))' 2>/dev/null) || old=""
    fi
    if [ -n "$WHEEL" ]; then
        new=$(basename "$WHEEL"); new=${new#prunefl_edge-}; new=${new%%-*}
    else
        new=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$target/pyproject.toml")
    fi
    force=()
    if [ -z "$old" ]; then
        what="installing prunefl-edge $new"
    elif [ "$old" = "$new" ]; then
        what="reinstalling prunefl-edge $new (the same version is installed: the build may differ)"
        force=(--force-reinstall --no-deps)
    else
        what="upgrading prunefl-edge from $old to $new"
    fi
    if [ "$DRY" = 1 ]; then note "would be $what"; else note "$what"; fi
    run "$R$VENV/bin/python" -m pip install --upgrade --no-input "${force[@]}" "${offline[@]}" "$target" \
        || die "$E_STEP" "pip install failed (output above); from source it needs: sudo apt-get install cmake gcc libc6-dev"
    if [ "$DRY" = 0 ]; then
        now=$("$R$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("prunefl-edge"))' 2>/dev/null) || now=""
        [ "$now" = "$new" ] || die "$E_STEP" "after pip install, prunefl-edge is ${now:-absent}, not $new"
        note "prunefl-edge ${old:+$old -> }$now installed"
    fi
fi

# -- 5. configuration ------------------------------------------------------------------------------------------
CONF=$R$CONF_DIR/edge.toml
if [ -f "$CONF" ]; then
    note "keeping existing $CONF_DIR/edge.toml"
    [ -z "$EDGE_ID$FEDERATION$BROKER" ] || note "warning: --edge-id/--federation/--broker ignored: edit $CONF_DIR/edge.toml"
else
    sed_args=(-e '')
    [ -z "$EDGE_ID" ] || sed_args+=(-e "s|^id = \"[^\"]*\"|id = \"$EDGE_ID\"|")
    [ -z "$FEDERATION" ] || sed_args+=(-e "s|^federation = \"[^\"]*\"|federation = \"$FEDERATION\"|")
    [ -z "$BROKER" ] || sed_args+=(-e "s|^url = \"[^\"]*\"|url = \"$BROKER\"|")
    if [[ $BROKER == mqtt://* ]]; then   # no TLS: the TLS lines off, or `check` refuses the config
        sed_args+=(-e "s|^ca_file = |# ca_file = |" -e "s|^cert_file = |# cert_file = |" -e "s|^key_file = |# key_file = |")
        note "warning: $BROKER is not encrypted: use mqtt:// only on a trusted network"
    fi
    if [ -n "$CREDS" ] && [ ! -f "$CREDS/client.crt" ] && [ -f "$CREDS/password" ]; then   # password login
        sed_args+=(-e "s|^cert_file = |# cert_file = |" -e "s|^key_file = |# key_file = |"
                   -e "s|^# username = .*|username = \"${EDGE_ID:-CHANGE-ME}\"|" -e "s|^# password_file = |password_file = |")
    fi
    echo "+ write $CONF_DIR/edge.toml from $HERE/edge.toml.example"
    if [ "$DRY" = 0 ]; then
        sed "${sed_args[@]}" "$HERE/edge.toml.example" >"$CONF.new"
        chmod 0640 "$CONF.new"
        mv "$CONF.new" "$CONF"
    fi
    [ "$CHOWN" = 0 ] || run chown "root:$USER_NAME" "$CONF"
fi
if [ -n "$CREDS" ]; then
    for f in ca.crt client.crt; do
        [ ! -f "$CREDS/$f" ] || run install -m 0644 "$CREDS/$f" "$R$CONF_DIR/tls/$f"
    done
    for f in client.key password; do
        [ ! -f "$CREDS/$f" ] || run install -m 0640 "$CREDS/$f" "$R$CONF_DIR/tls/$f"
        [ ! -f "$CREDS/$f" ] || [ "$CHOWN" = 0 ] || run chown "root:$USER_NAME" "$R$CONF_DIR/tls/$f"
    done
fi

# -- 6. systemd unit -------------------------------------------------------------------------------------------
UNIT=$R$UNIT_DIR/prunefl-edge.service
echo "+ write $UNIT_DIR/prunefl-edge.service (venv $VENV)"
if [ "$DRY" = 0 ]; then
    sed -e "s|/opt/prunefl-edge/venv/|$VENV/|g" -e "s|file:///opt/prunefl-edge/|file://$PREFIX/|" \
        "$HERE/systemd/prunefl-edge.service" >"$UNIT.new"
    chmod 0644 "$UNIT.new"
    mv "$UNIT.new" "$UNIT"
fi
DOCS=$(dirname "$HERE")/docs/DEPLOY.md
[ ! -f "$DOCS" ] || run install -m 0644 "$DOCS" "$R$PREFIX/DEPLOY.md"
# growing restart delays need systemd >= 254 (RestartSteps); Debian 12 / Pi OS bookworm has 252
SYSTEMD_VERSION=${SYSTEMD_VERSION:-$( (systemctl --version 2>/dev/null || true) | awk 'NR == 1 {print $2 + 0}')}
if [ "${SYSTEMD_VERSION:-0}" -ge 254 ]; then
    run install -d -m 0755 "$R$UNIT_DIR/prunefl-edge.service.d"
    run install -m 0644 "$HERE/systemd/backoff.conf" "$R$UNIT_DIR/prunefl-edge.service.d/backoff.conf"
else
    note "systemd ${SYSTEMD_VERSION:-unknown} < 254: fixed restart delay (no RestartSteps back-off drop-in)"
    [ ! -f "$R$UNIT_DIR/prunefl-edge.service.d/backoff.conf" ] || run rm -f "$R$UNIT_DIR/prunefl-edge.service.d/backoff.conf"
fi

# -- 7. enable and start ---------------------------------------------------------------------------------------
if [ "$SYSTEMCTL" = 1 ] && [ -n "$ROOT" ]; then
    # an image: the host's systemd is none of its business; enabled as systemctl enable would, by the wants link
    run install -d -m 0755 "$R$UNIT_DIR/multi-user.target.wants"
    run ln -sfn "$UNIT_DIR/prunefl-edge.service" "$R$UNIT_DIR/multi-user.target.wants/prunefl-edge.service"
    if { [ -f "$CONF" ] && grep -q '^id = "CHANGE-ME"' "$CONF"; } || { [ ! -f "$CONF" ] && [ -z "$EDGE_ID" ]; }; then
        note "enabled in the image under $ROOT, not started (the host's systemctl not run): set the edge id in $CONF_DIR/edge.toml before its first boot"
    else
        note "enabled in the image under $ROOT, not started (the host's systemctl not run): it starts at the image's boot"
    fi
elif [ "$SYSTEMCTL" = 1 ]; then
    run systemctl daemon-reload || die "$E_STEP" "systemctl daemon-reload failed"
    run systemctl enable prunefl-edge.service || die "$E_STEP" "systemctl enable prunefl-edge failed"
    if [ "$START" = 0 ]; then
        note "enabled, not started (--no-start): sudo systemctl start prunefl-edge"
    elif { [ -f "$CONF" ] && grep -q '^id = "CHANGE-ME"' "$CONF"; } || { [ ! -f "$CONF" ] && [ -z "$EDGE_ID" ]; }; then
        note "enabled, not started: set the edge id in $CONF_DIR/edge.toml, then: sudo systemctl restart prunefl-edge"
    else
        run systemctl restart prunefl-edge.service \
            || die "$E_STEP" "systemctl restart prunefl-edge failed: journalctl -u prunefl-edge -n 50"
        if [ "$DRY" = 1 ]; then
            note "would be (re)started (dry run: not started)"
        else
            note "started: systemctl status prunefl-edge; journalctl -u prunefl-edge -f"
        fi
    fi
fi
if [ "$DRY" = 1 ]; then note "dry run: nothing changed"; else note "done"; fi
