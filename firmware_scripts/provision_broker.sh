#!/usr/bin/env bash
# Broker provisioning for a PruneFL-Edge federation on a stock Mosquitto 2.0 (Debian 12 / Raspberry Pi OS bookworm):
# a private CA, the broker's server certificate, one client certificate (CN = edge id) per edge and one for the
# coordinator, optionally passwords, a Mosquitto config with a TLS listener and an ACL file that gives each edge
# only its own topics and the coordinator the whole federation. Only the `openssl` CLI (and `mosquitto_passwd` for
# passwords) is needed. Run `provision_broker.sh --help`.
set -euo pipefail

PROG=$(basename "$0")
# exit codes
E_USAGE=2      # bad command line
E_STATE=3      # the provisioning directory is missing, already initialised, or does not know that edge
E_TOOL=4       # openssl / mosquitto_passwd missing or failing

usage() {
    cat <<EOF
Usage: $PROG COMMAND --dir DIR [options]

Commands:
  init          create the CA, server certificate, client certificates and the Mosquitto config in DIR
  add-edge      issue certificates (or passwords) for new edges:        $PROG add-edge --dir DIR ID...
  rotate-edge   re-issue edges' credentials, revoking the old certificate: $PROG rotate-edge --dir DIR ID...
  revoke-edge   revoke edges: certificate into the CRL, ACL entry and password removed
  render        rewrite broker/mosquitto.conf, broker/acl, broker/ca.crt, broker/crl.pem from DIR's state
  list          the federation, its edges and their certificates' expiry

Options for init:
  --federation NAME       federation id, the <federation> of prunefl/<federation>/... (required)
  --host NAME             broker host name for the server certificate's SAN (repeatable)
  --ip ADDR               broker IP address for the SAN (repeatable)
  --no-localhost          leave localhost/127.0.0.1 out of the SAN (they are in by default, for local clients)
  --edges ID[,ID...]      edges to provision now (repeatable; more later with add-edge)
  --coordinator-id ID     the coordinator's identity (default: coordinator)
  --auth cert|password    edges and coordinator authenticate by client certificate (default) or by username
                          and password over server-authenticated TLS
  --port N                TLS listener port (default 8883)
  --bind ADDR             TLS listener address (default: all)
  --plain-loopback-port N also open a plain-TCP listener on 127.0.0.1:N, for a coordinator on the broker host
                          (password login; off by default)
  --broker-path PATH      where DIR/broker/ will live on the broker host; the config names files there
                          (default: DIR/broker itself)
  --days N                validity of leaf certificates in days (default 825; the CA: 3650)
  --crl-days N            validity of the CRL in days (default 3650; an expired CRL locks every client out)
  --max-packet-size B     broker's max_packet_size in bytes (default 16777216); payloads are chunked below it
  --force                 re-initialise a DIR that already holds a federation (destroys its CA)

Common options:
  --dir DIR               the provisioning directory (keep it private: it holds the CA key)
  -h, --help              this help

Layout of DIR:
  ca/                     CA key and database (never copy to a device or the broker)
  broker/                 what the broker host needs: mosquitto.conf, acl, [passwd], ca.crt, crl.pem, server.*
  clients/<id>/           what one client needs: ca.crt, client.crt + client.key (cert auth) or password
Install on the broker host (paths as given by --broker-path):
  sudo install -d -m 0750 -o root -g mosquitto /etc/mosquitto/prunefl
  sudo install -m 0640 -o root -g mosquitto DIR/broker/* /etc/mosquitto/prunefl/
  sudo ln -sf /etc/mosquitto/prunefl/mosquitto.conf /etc/mosquitto/conf.d/prunefl.conf
  sudo systemctl restart mosquitto      # after add/rotate/revoke: copy again, then restart (see DEPLOY.md)

Exit status: 0 ok, $E_USAGE usage error, $E_STATE wrong state of DIR, $E_TOOL openssl/mosquitto_passwd missing or failing.
EOF
}

die() { local code=$1; shift; echo "$PROG: error: $*" >&2; exit "$code"; }
note() { echo "$PROG: $*"; }

need_tool() {
    command -v "$1" >/dev/null 2>&1 || die "$E_TOOL" "'$1' is not installed: sudo apt-get install $2"
}

ossl() {  # openssl with its output shown only on failure
    local out
    if ! out=$(openssl "$@" 2>&1); then
        echo "$out" >&2
        die "$E_TOOL" "openssl $1 failed (output above)"
    fi
}

valid_id() {  # edge/coordinator/federation ids become topic levels and usernames: no MQTT wildcards or separators
    [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]]
}

# ---------------------------------------------------------------------------------------------------------------
# command line
[ $# -ge 1 ] || { usage >&2; exit "$E_USAGE"; }
case $1 in -h|--help|help) usage; exit 0 ;; esac
CMD=$1; shift
case $CMD in init|add-edge|rotate-edge|revoke-edge|render|list) ;;
    *) echo "$PROG: error: unknown command '$CMD' (one of init, add-edge, rotate-edge, revoke-edge, render, list)" >&2
       exit "$E_USAGE" ;;
esac

DIR="" FEDERATION="" COORD="coordinator" AUTH="cert" PORT=8883 BIND="" PLAIN_PORT="" BROKER_PATH=""
DAYS=825 CRL_DAYS=3650 MAX_PACKET=16777216 FORCE=0 LOCALHOST=1
HOSTS=() IPS=() EDGES=() IDS=()
while [ $# -gt 0 ]; do
    opt=$1
    case $opt in
        -h|--help) usage; exit 0 ;;
        --force) FORCE=1; shift; continue ;;
        --no-localhost) LOCALHOST=0; shift; continue ;;
        --*) [ $# -ge 2 ] || die "$E_USAGE" "$opt needs a value" ;;
    esac
    case $opt in
        --dir) DIR=$2 ;;
        --federation) FEDERATION=$2 ;;
        --host) HOSTS+=("$2") ;;
        --ip) IPS+=("$2") ;;
        --edges) IFS=',' read -r -a more <<<"$2"; EDGES+=("${more[@]}") ;;
        --coordinator-id) COORD=$2 ;;
        --auth) AUTH=$2 ;;
        --port) PORT=$2 ;;
        --bind) BIND=$2 ;;
        --plain-loopback-port) PLAIN_PORT=$2 ;;
        --broker-path) BROKER_PATH=$2 ;;
        --days) DAYS=$2 ;;
        --crl-days) CRL_DAYS=$2 ;;
        --max-packet-size) MAX_PACKET=$2 ;;
        --*) die "$E_USAGE" "unknown option $opt (see --help)" ;;
        *) IDS+=("$opt"); shift; continue ;;
    esac
    shift 2
done

[ -n "$DIR" ] || die "$E_USAGE" "--dir DIR is required"
need_tool openssl openssl
DIR=$(realpath -m "$DIR")
STATE=$DIR/provision.conf

# ---------------------------------------------------------------------------------------------------------------
# state: provision.conf (key=value, parsed, never sourced) and edges.txt (active edge ids)
save_state() {
    {
        echo "# written by $PROG; edit with care, then run: $PROG render --dir $DIR"
        echo "federation=$FEDERATION"
        echo "coordinator=$COORD"
        echo "auth=$AUTH"
        echo "port=$PORT"
        echo "bind=$BIND"
        echo "plain_port=$PLAIN_PORT"
        echo "broker_path=$BROKER_PATH"
        echo "days=$DAYS"
        echo "crl_days=$CRL_DAYS"
        echo "max_packet_size=$MAX_PACKET"
    } >"$STATE"
}

load_state() {
    [ -f "$STATE" ] || die "$E_STATE" "$DIR is not a provisioning directory (no provision.conf): run '$PROG init --dir $DIR ...' first"
    local key value
    while IFS='=' read -r key value; do
        case $key in
            federation) FEDERATION=$value ;; coordinator) COORD=$value ;; auth) AUTH=$value ;; port) PORT=$value ;;
            bind) BIND=$value ;; plain_port) PLAIN_PORT=$value ;; broker_path) BROKER_PATH=$value ;;
            days) DAYS=$value ;; crl_days) CRL_DAYS=$value ;; max_packet_size) MAX_PACKET=$value ;;
        esac
    done < <(grep -v '^#' "$STATE")
}

check_settings() {
    valid_id "$FEDERATION" || die "$E_USAGE" "federation '$FEDERATION' must be 1-64 of [A-Za-z0-9_.-] (no / + #)"
    valid_id "$COORD" || die "$E_USAGE" "coordinator id '$COORD' must be 1-64 of [A-Za-z0-9_.-]"
    case $AUTH in cert|password) ;; *) die "$E_USAGE" "--auth must be cert or password, not '$AUTH'" ;; esac
    local n
    for n in "$PORT" "$DAYS" "$CRL_DAYS" "$MAX_PACKET" ${PLAIN_PORT:+"$PLAIN_PORT"}; do
        [[ $n =~ ^[1-9][0-9]*$ ]] || die "$E_USAGE" "'$n' is not a positive integer"
    done
    if [ "$PORT" -gt 65535 ] || [ "${PLAIN_PORT:-1}" -gt 65535 ]; then die "$E_USAGE" "ports must be <= 65535"; fi
    [ "$PORT" != "$PLAIN_PORT" ] || die "$E_USAGE" "--plain-loopback-port must differ from --port"
}

active_edges() { if [ -f "$DIR/edges.txt" ]; then grep -v '^[[:space:]]*$' "$DIR/edges.txt" || true; fi; }
is_active() { active_edges | grep -qxF -- "$1"; }

# ---------------------------------------------------------------------------------------------------------------
# the CA (openssl ca keeps the database that revocation and the CRL need)
write_ca_config() {
    cat >"$DIR/ca/openssl.cnf" <<EOF
[ ca ]
default_ca = prunefl_ca

[ prunefl_ca ]
dir              = $DIR/ca
database         = \$dir/index.txt
new_certs_dir    = \$dir/newcerts
certificate      = \$dir/ca.crt
private_key      = \$dir/ca.key
serial           = \$dir/serial
crlnumber        = \$dir/crlnumber
default_md       = sha256
default_days     = $DAYS
default_crl_days = $CRL_DAYS
policy           = policy_cn
unique_subject   = no
copy_extensions  = none
email_in_dn      = no

[ policy_cn ]
commonName = supplied

[ req ]
distinguished_name = req_dn
prompt             = no

[ req_dn ]
CN = unused

[ v3_ca ]
basicConstraints       = critical, CA:TRUE, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
EOF
}

new_key() {  # ECDSA P-256: small, fast on a Pi, supported by Mosquitto/OpenSSL and Python's ssl
    (umask 077; ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1")
}

init_ca() {
    mkdir -p "$DIR/ca/newcerts"
    chmod 700 "$DIR/ca"
    write_ca_config
    : >"$DIR/ca/index.txt"
    echo "unique_subject = no" >"$DIR/ca/index.txt.attr"
    openssl rand -hex 16 >"$DIR/ca/serial"
    echo 1000 >"$DIR/ca/crlnumber"
    new_key "$DIR/ca/ca.key"
    ossl req -config "$DIR/ca/openssl.cnf" -x509 -new -key "$DIR/ca/ca.key" -sha256 -days 3650 \
        -subj "/CN=PruneFL-Edge CA ($FEDERATION)" -extensions v3_ca -out "$DIR/ca/ca.crt"
    gen_crl
}

gen_crl() {
    ossl ca -batch -config "$DIR/ca/openssl.cnf" -gencrl -out "$DIR/ca/crl.pem"
}

# issue NAME KIND OUTDIR [SAN]: key + CSR + certificate signed by the CA; KIND server or client
issue() {
    local cn=$1 kind=$2 out=$3 san=${4:-} ext
    mkdir -p "$out"
    ext=$(mktemp)
    {
        echo "basicConstraints = critical, CA:FALSE"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid"
        if [ "$kind" = server ]; then
            echo "keyUsage = critical, digitalSignature, keyAgreement"
            echo "extendedKeyUsage = serverAuth"
            echo "subjectAltName = $san"
        else
            echo "keyUsage = critical, digitalSignature, keyAgreement"
            echo "extendedKeyUsage = clientAuth"
        fi
    } >"$ext"
    local key=$out/$kind.key crt=$out/$kind.crt
    new_key "$key.new"
    ossl req -config "$DIR/ca/openssl.cnf" -new -key "$key.new" -subj "/CN=$cn" -out "$out/$kind.csr"
    ossl ca -batch -notext -config "$DIR/ca/openssl.cnf" -extfile "$ext" -days "$DAYS" \
        -in "$out/$kind.csr" -out "$crt.new"
    rm -f "$ext" "$out/$kind.csr"
    mv -f "$key.new" "$key"
    mv -f "$crt.new" "$crt"
    chmod 600 "$key"
    chmod 644 "$crt"
}

revoke_cert() {  # revoke a certificate file if the CA database still lists it as valid
    local crt=$1 serial
    [ -f "$crt" ] || return 0
    serial=$(openssl x509 -in "$crt" -noout -serial | sed 's/^serial=//')
    if awk -F'\t' -v s="$serial" '$1 == "V" && $4 == s {found = 1} END {exit !found}' "$DIR/ca/index.txt"; then
        ossl ca -batch -config "$DIR/ca/openssl.cnf" -revoke "$crt" -crl_reason superseded
    fi
}

# ---------------------------------------------------------------------------------------------------------------
# passwords (mosquitto_passwd hashes them; the clear text goes only to clients/<id>/password, mode 0600)
uses_passwords() { [ "$AUTH" = password ] || [ -n "$PLAIN_PORT" ]; }

set_password() {
    local id=$1 pw
    need_tool mosquitto_passwd mosquitto
    pw=$(openssl rand -base64 30 | tr -d '/+=\n')
    mkdir -p "$DIR/clients/$id"
    (umask 077; printf '%s\n' "$pw" >"$DIR/clients/$id/password")
    [ -f "$DIR/broker/passwd" ] || (umask 077; : >"$DIR/broker/passwd")
    mosquitto_passwd -b "$DIR/broker/passwd" "$id" "$pw" >/dev/null 2>&1 \
        || die "$E_TOOL" "mosquitto_passwd failed for '$id'"
}

drop_password() {
    [ -f "$DIR/broker/passwd" ] || return 0
    grep -q "^$1:" "$DIR/broker/passwd" || return 0
    mosquitto_passwd -D "$DIR/broker/passwd" "$1" >/dev/null 2>&1 || die "$E_TOOL" "mosquitto_passwd -D failed for '$1'"
}

# credentials for one client id (edge or coordinator): certificate in cert mode, password in password mode;
# the coordinator also gets a password when the plain loopback listener is on
issue_client() {
    local id=$1 out=$DIR/clients/$1
    mkdir -p "$out"
    chmod 700 "$out"
    cp "$DIR/ca/ca.crt" "$out/ca.crt"
    if [ "$AUTH" = cert ]; then
        revoke_cert "$out/client.crt"
        issue "$id" client "$out"
    fi
    if [ "$AUTH" = password ] || { [ "$id" = "$COORD" ] && [ -n "$PLAIN_PORT" ]; }; then
        set_password "$id"
    fi
}

# ---------------------------------------------------------------------------------------------------------------
# Mosquitto config and ACL. Topic names follow prunefl_common/protocol/topics.py:
#   prunefl/<federation>/edge/<id>/task     coordinator -> edge   (edge: read)
#   prunefl/<federation>/edge/<id>/result   edge -> coordinator   (edge: write)
#   prunefl/<federation>/edge/<id>/status   retained, Last-Will "offline" (edge: write)
# and the coordinator reads and writes prunefl/<federation>/#.
render() {
    local bp=${BROKER_PATH:-$DIR/broker} b=$DIR/broker id
    mkdir -p "$b"
    cp "$DIR/ca/ca.crt" "$b/ca.crt"
    cp "$DIR/ca/crl.pem" "$b/crl.pem"
    {
        echo "# PruneFL-Edge broker for federation '$FEDERATION': written by $PROG; regenerate, do not edit."
        echo "# Each client is known by its identity (certificate CN or username); the ACL file gives each edge"
        echo "# its own topics only, the coordinator '$COORD' the whole federation."
        echo "per_listener_settings false"
        echo "allow_anonymous false"
        echo "acl_file $bp/acl"
        uses_passwords && echo "password_file $bp/passwd"
        echo "max_packet_size $MAX_PACKET"
        echo "persistent_client_expiration 14d"
        echo "set_tcp_nodelay true"
        echo
        echo "# TLS listener"
        echo "listener $PORT${BIND:+ $BIND}"
        echo "protocol mqtt"
        echo "tls_version tlsv1.2"
        echo "cafile $bp/ca.crt"
        echo "certfile $bp/server.crt"
        echo "keyfile $bp/server.key"
        if [ "$AUTH" = cert ]; then
            echo "crlfile $bp/crl.pem"
            echo "require_certificate true"
            echo "use_identity_as_username true"
        else
            echo "require_certificate false"
        fi
        echo "# the client id is forced to the identity: no client can take over another's session"
        echo "use_username_as_clientid true"
        if [ -n "$PLAIN_PORT" ]; then
            echo
            echo "# plain TCP, loopback only, password login: for a coordinator running on the broker host"
            echo "listener $PLAIN_PORT 127.0.0.1"
            echo "protocol mqtt"
            echo "use_username_as_clientid true"
        fi
    } >"$b/mosquitto.conf"
    {
        echo "# PruneFL-Edge ACL for federation '$FEDERATION': written by $PROG; regenerate, do not edit."
        echo "user $COORD"
        echo "topic readwrite prunefl/$FEDERATION/#"
        while read -r id; do
            echo
            echo "user $id"
            echo "topic read prunefl/$FEDERATION/edge/$id/task"
            echo "topic write prunefl/$FEDERATION/edge/$id/result"
            echo "topic write prunefl/$FEDERATION/edge/$id/status"
        done < <(active_edges)
    } >"$b/acl"
    chmod 644 "$b/mosquitto.conf" "$b/acl" "$b/ca.crt" "$b/crl.pem"
    [ ! -f "$b/passwd" ] || chmod 600 "$b/passwd"
}

# ---------------------------------------------------------------------------------------------------------------
check_edge_ids() {
    local id
    for id in "$@"; do
        valid_id "$id" || die "$E_USAGE" "edge id '$id' must be 1-64 of [A-Za-z0-9_.-] (it is a topic level and a username)"
        [ "$id" != "$COORD" ] || die "$E_USAGE" "edge id '$id' is the coordinator's identity"
    done
}

add_edges() {
    local id
    check_edge_ids "$@"
    for id in "$@"; do
        if is_active "$id"; then
            note "edge '$id' already provisioned (use rotate-edge to re-issue)"
            continue
        fi
        issue_client "$id"
        echo "$id" >>"$DIR/edges.txt"
        note "edge '$id': credentials in $DIR/clients/$id/"
    done
}

require_known() {
    local id
    for id in "$@"; do is_active "$id" || die "$E_STATE" "no active edge '$id' in $DIR (see: $PROG list --dir $DIR)"; done
}

cmd_init() {
    if [ -f "$STATE" ] && [ "$FORCE" != 1 ]; then
        die "$E_STATE" "$DIR already holds federation '$(sed -n 's/^federation=//p' "$STATE")'; use add-edge/rotate-edge, or --force to start over (new CA: every client must be re-provisioned)"
    fi
    [ -n "$FEDERATION" ] || die "$E_USAGE" "--federation NAME is required for init"
    check_settings
    [ ${#IDS[@]} -eq 0 ] || die "$E_USAGE" "unexpected argument '${IDS[0]}' (edges go in --edges)"
    [ ${#EDGES[@]} -eq 0 ] || check_edge_ids "${EDGES[@]}"
    local san="" h i
    [ "$LOCALHOST" = 1 ] && san="DNS:localhost,IP:127.0.0.1,IP:::1"
    for h in "${HOSTS[@]}"; do
        [[ $h =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] || die "$E_USAGE" "bad host name '$h'"
        san="${san:+$san,}DNS:$h"
    done
    for i in "${IPS[@]}"; do
        [[ $i =~ ^[0-9A-Fa-f:.]+$ ]] || die "$E_USAGE" "bad IP address '$i'"
        san="${san:+$san,}IP:$i"
    done
    [ -n "$san" ] || die "$E_USAGE" "the server certificate needs at least one --host or --ip (or keep localhost)"
    rm -rf "$DIR/ca" "$DIR/broker" "$DIR/clients" "$DIR/edges.txt"
    mkdir -p "$DIR" "$DIR/broker" "$DIR/clients"
    chmod 700 "$DIR"
    save_state
    : >"$DIR/edges.txt"
    init_ca
    issue "$(if [ ${#HOSTS[@]} -gt 0 ]; then echo "${HOSTS[0]}"; else echo localhost; fi)" server "$DIR/broker" "$san"
    issue_client "$COORD"
    note "coordinator '$COORD': credentials in $DIR/clients/$COORD/"
    [ ${#EDGES[@]} -eq 0 ] || add_edges "${EDGES[@]}"
    render
    note "federation '$FEDERATION' provisioned in $DIR (broker files: $DIR/broker/)"
}

cmd_list() {
    echo "federation:  $FEDERATION"
    echo "auth:        $AUTH (TLS port $PORT${PLAIN_PORT:+, plain loopback port $PLAIN_PORT})"
    echo "coordinator: $COORD"
    echo "CRL valid until: $(openssl crl -in "$DIR/ca/crl.pem" -noout -nextupdate | sed 's/^nextUpdate=//')"
    local id
    while read -r id; do
        if [ -f "$DIR/clients/$id/client.crt" ]; then
            echo "edge $id: certificate until $(openssl x509 -in "$DIR/clients/$id/client.crt" -noout -enddate | sed 's/^notAfter=//')"
        else
            echo "edge $id: password"
        fi
    done < <(active_edges)
}

case $CMD in
    init) cmd_init ;;
    *)
        load_state
        check_settings
        case $CMD in
            add-edge)
                [ ${#IDS[@]} -gt 0 ] || die "$E_USAGE" "add-edge needs at least one edge id"
                add_edges "${IDS[@]}"; render ;;
            rotate-edge)
                [ ${#IDS[@]} -gt 0 ] || die "$E_USAGE" "rotate-edge needs at least one edge id"
                require_known "${IDS[@]}"
                for id in "${IDS[@]}"; do issue_client "$id"; note "edge '$id': new credentials in $DIR/clients/$id/"; done
                gen_crl; render ;;
            revoke-edge)
                [ ${#IDS[@]} -gt 0 ] || die "$E_USAGE" "revoke-edge needs at least one edge id"
                require_known "${IDS[@]}"
                for id in "${IDS[@]}"; do
                    revoke_cert "$DIR/clients/$id/client.crt"
                    drop_password "$id"
                    grep -vxF -- "$id" "$DIR/edges.txt" >"$DIR/edges.txt.new" || true
                    mv -f "$DIR/edges.txt.new" "$DIR/edges.txt"
                    rm -rf "${DIR:?}/clients/$id"
                    note "edge '$id' revoked"
                done
                gen_crl; render ;;
            render) render ;;
            list) cmd_list ;;
        esac
        [ "$CMD" = list ] || note "broker files updated in $DIR/broker/: copy them to the broker host and restart mosquitto"
        ;;
esac
