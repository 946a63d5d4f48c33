#!/usr/bin/env bash
# Certificates for dockerd's TLS listener in jobdock's per-user mode (contrib/authz/README.md):
# dockerd passes the client certificate's CN to `jobdock authz` as the request's user, so a user's
# certificate must be theirs alone (its key mode 0400, owned by them).
#
#   make-certs.sh ca DIR                     DIR/ca.pem and DIR/ca-key.pem (root 0400), once
#   make-certs.sh server DIR NAME [IP...]    DIR/server-cert.pem, DIR/server-key.pem for dockerd
#   make-certs.sh user DIR USER [DEST]       a client certificate with CN=USER, in DEST (default
#                                            DIR/users/USER) as ca.pem, cert.pem, key.pem, owned
#                                            by USER: DOCKER_CERT_PATH for that user
#
# ECDSA P-256 keys, SHA-256 signatures; server certificates for serverAuth, users' for clientAuth
# only. Validity: DAYS (default 365; the CA 3650).
set -euo pipefail
umask 077
DAYS=${DAYS:-365}

die() { printf 'make-certs: %s\n' "$*" >&2; exit 1; }
command -v openssl >/dev/null || die "openssl is missing"

key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; chmod 0400 "$1"; }

# sign DIR CSR OUT EXTFILE
sign() {
  openssl x509 -req -in "$2" -CA "$1/ca.pem" -CAkey "$1/ca-key.pem" -CAcreateserial \
    -days "$DAYS" -sha256 -extfile "$4" -out "$3" 2>/dev/null
}

cmd=${1:-}; dir=${2:-}
[[ -n $cmd && -n $dir ]] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 64; }
case $cmd in
  ca)
    install -d -m 0700 "$dir"
    [[ -e $dir/ca-key.pem ]] && die "$dir/ca-key.pem exists; remove it to make a new CA"
    key "$dir/ca-key.pem"
    openssl req -new -x509 -key "$dir/ca-key.pem" -sha256 -days "${CA_DAYS:-3650}" \
      -subj "/CN=jobdock docker CA" -out "$dir/ca.pem" 2>/dev/null
    chmod 0444 "$dir/ca.pem"
    echo "make-certs: CA in $dir/ca.pem"
    ;;
  server)
    name=${3:?server NAME}; shift 3
    san="DNS:$name"
    for ip in "$@"; do san+=",IP:$ip"; done
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    key "$dir/server-key.pem"
    openssl req -new -key "$dir/server-key.pem" -subj "/CN=$name" -out "$tmp/csr" 2>/dev/null
    printf 'subjectAltName = %s\nextendedKeyUsage = serverAuth\n' "$san" >"$tmp/ext"
    sign "$dir" "$tmp/csr" "$dir/server-cert.pem" "$tmp/ext"
    chmod 0444 "$dir/server-cert.pem"
    echo "make-certs: server certificate for $san in $dir/server-cert.pem"
    ;;
  user)
    user=${3:?user USER}; dest=${4:-$dir/users/$user}
    id -u "$user" >/dev/null 2>&1 || die "$user is not a user of this node"
    [[ $user =~ ^[a-z_][a-z0-9_.-]*$ ]] || die "$user: not a plain user name (it becomes the CN)"
    [[ $user != root ]] || die "no certificate speaks for root"
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    install -d -m 0700 "$dest"
    key "$dest/key.pem"
    openssl req -new -key "$dest/key.pem" -subj "/CN=$user" -out "$tmp/csr" 2>/dev/null
    printf 'extendedKeyUsage = clientAuth\n' >"$tmp/ext"
    sign "$dir" "$tmp/csr" "$dest/cert.pem" "$tmp/ext"
    install -m 0444 "$dir/ca.pem" "$dest/ca.pem"
    chown -R "$user:" "$dest"
    echo "make-certs: client certificate CN=$user in $dest (DOCKER_CERT_PATH=$dest)"
    ;;
  *) die "unknown command $cmd (ca, server, user)" ;;
esac
