#!/usr/bin/env bash
# Start a training job on a running nanoLLM gRPC server with grpcurl and follow it to its end,
# through server reflection only (no .proto files): describe TrainService, StartJob, WatchJob
# (a snapshot, then live steps, evaluations, checkpoints, log lines and state changes), GetJob.
#
#   clients/grpcurl_train.sh                               # 127.0.0.1:50051, no keys
#   clients/grpcurl_train.sh -a ADMIN_KEY host:50051       # a server with API keys
#   clients/grpcurl_train.sh -d mybook.txt -n 500          # data under the server's data roots
#
# The job trains a tiny byte-level model on CPU; its data path is looked up under the server's
# data roots (by default data/ and the bundled corpus folder, which holds shakespeare.txt).
# grpcurl comes with the dev install (.venv/bin/grpcurl); set GRPCURL to use another one.
set -euo pipefail

usage() {
  echo "usage: $0 [-a ADMIN_KEY] [-c CA_CERT] [-d DATA_PATH] [-n MAX_ITERS] [HOST:PORT]" >&2
  exit 2
}

admin_key="" ca_cert="" data="shakespeare.txt" iters=100
while getopts "a:c:d:n:h" opt; do
  case "$opt" in
    a) admin_key="$OPTARG" ;;
    c) ca_cert="$OPTARG" ;;
    d) data="$OPTARG" ;;
    n) iters="$OPTARG" ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -le 1 ] || usage
[[ "$iters" =~ ^[1-9][0-9]*$ ]] || { echo "$0: -n needs a positive number" >&2; exit 2; }
addr="${1:-127.0.0.1:50051}"

. "$(dirname "$0")/grpcurl_common.sh"
use_grpcurl "$0" "$ca_cert"

admin=()
[ -z "$admin_key" ] || admin=(-H "authorization: Bearer $admin_key")

json_data=$(json_string "$data")
spec="{\"spec\": {\"name\": \"grpcurl demo\",
  \"scratch\": {\"n_layer\": 2, \"n_head\": 2, \"n_embd\": 64, \"block_size\": 64, \"tokenizer\": \"byte\"},
  \"training\": {\"max_iters\": $iters, \"batch_size\": 8, \"learning_rate\": 0.002,
                 \"warmup_iters\": 10, \"eval_interval\": $iters, \"eval_iters\": 5,
                 \"log_interval\": 10},
  \"data\": {\"path\": \"$json_data\"}, \"device\": \"cpu\"}}"

echo "== describe"
run "$addr" describe nanollm.v1.TrainService
echo "== start a job"
started=$(run "${admin[@]}" -d "$spec" "$addr" nanollm.v1.TrainService/StartJob)
echo "$started"
job_id=$(printf '%s\n' "$started" | sed -n 's/^ *"job_id": "\([^"]*\)".*/\1/p' | head -n 1)
[ -n "$job_id" ] || { echo "$0: StartJob returned no job id" >&2; exit 1; }
echo "== watch job $job_id: a snapshot, then live events until it ends"
run "${admin[@]}" -d "{\"job_id\": \"$job_id\"}" "$addr" nanollm.v1.TrainService/WatchJob
echo "== the job at its end"
run "${admin[@]}" -d "{\"job_id\": \"$job_id\"}" "$addr" nanollm.v1.TrainService/GetJob
