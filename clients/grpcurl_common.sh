# Shared by clients/grpcurl.sh and clients/grpcurl_train.sh (sourced, not run): find grpcurl,
# pick plaintext or TLS, and run each command after printing it ready to paste (keys masked).
#
#   . "$(dirname "$0")/grpcurl_common.sh"
#   use_grpcurl "$0" "$ca_cert"         # sets GRPCURL (unless set) and conn
#   run -d "{\"prompt\": \"$(json_string "$text")\"}" "$addr" nanollm.v1.GenerateService/Generate

# grpcurl: $GRPCURL, else the one on PATH, else the dev install's .venv/bin/grpcurl. Then
# -plaintext unless a CA certificate is given.
use_grpcurl() {
  if [ -z "${GRPCURL:-}" ]; then
    local here
    here="$(cd "$(dirname "$1")/.." && pwd)"
    if command -v grpcurl >/dev/null; then GRPCURL=grpcurl
    elif [ -x "$here/.venv/bin/grpcurl" ]; then GRPCURL="$here/.venv/bin/grpcurl"
    else echo "grpcurl not found: run make install, or set GRPCURL" >&2; exit 2
    fi
  fi
  conn=(-plaintext)
  [ -z "$2" ] || conn=(-cacert "$2")
}

# One argument as it would be typed: quoted when needed, a Bearer key masked.
show() {
  case "$1" in
    "authorization: Bearer "*) printf " 'authorization: Bearer <key>'" ;;
    *[!A-Za-z0-9_./:=@-]*) printf " '%s'" "${1//\'/\'\\\'\'}" ;;
    *) printf ' %s' "$1" ;;
  esac
}

# Print the command (on stderr), then run it.
run() {
  { printf '+ grpcurl'; for arg in "${conn[@]}" "$@"; do show "$arg"; done; echo; } >&2
  "$GRPCURL" "${conn[@]}" "$@"
}

# A text as a JSON string body (quotes and backslashes escaped), without the quotes.
json_string() {
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}
