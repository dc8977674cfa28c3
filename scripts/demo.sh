#!/usr/bin/env bash
# The whole RecGPT pipeline on MovieLens-100K, on CPU: data -> continued pre-training -> instruction tuning ->
# evaluation beside baselines -> the HTTP service answering for one user. `make demo` runs this inside .venv.
# Extra key=value arguments go to every step that takes them (e.g. none for the real demo); DEMO_DIR moves
# every output (default artifacts/demo). The last line printed is the path of the JSON report.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DEMO_DIR=${DEMO_DIR:-artifacts/demo}
PREPARE_ARGS=${PREPARE_ARGS:-}      # e.g. "max_users=60" for a quick run
PT_ARGS=${PT_ARGS:-}                # e.g. "max_duration=10ba"
FT_ARGS=${FT_ARGS:-}
EVAL_ARGS=${EVAL_ARGS:-}
EVAL_CONFIG=${EVAL_CONFIG:-configs/eval/demo.yaml}  # configs/eval/full.yaml adds every method and SASRec / MF
NPROC=${NPROC:-1}                   # composer processes (2: DDP over gloo)
started=$(date +%s)
step() { printf '\n==> [%ss] %s\n' "$(( $(date +%s) - started ))" "$*" >&2; }
mkdir -p "$DEMO_DIR"
MLRUNS="$(cd "$DEMO_DIR" && pwd)/mlruns"   # the MLflow store of every stage (absolute: `mlflow ui` needs it)

step "1/5 data: MovieLens-100K -> corpus, instructions, leave-one-out benchmark, BPE tokenizer, MDS shards"
# shellcheck disable=SC2086
recgpt data prepare configs/data/movielens-100k.yaml output="$DEMO_DIR/data" $PREPARE_ARGS >&2

step "2/5 continued pre-training of a tiny MPT (ALiBi) on the training histories"
# shellcheck disable=SC2086
composer -n "$NPROC" scripts/train.py configs/demo/pre-training.yaml \
  variables.data_dir="$DEMO_DIR/data" variables.run_dir="$DEMO_DIR/pre-training" \
  variables.mlflow_uri="file:$MLRUNS" $PT_ARGS >&2

step "3/5 instruction fine-tuning (next item + rating) from the pre-trained checkpoint"
# shellcheck disable=SC2086
composer -n "$NPROC" scripts/train.py configs/demo/fine-tuning.yaml \
  variables.data_dir="$DEMO_DIR/data" variables.run_dir="$DEMO_DIR/fine-tuning" \
  variables.pretrained="$DEMO_DIR/pre-training/hf/huggingface/final" variables.mlflow_uri="file:$MLRUNS" $FT_ARGS >&2

step "4/5 evaluation: HR@K / NDCG@K over the full catalogue and RMSE / MAE, beside baselines"
curve="$DEMO_DIR/fine-tuning/rec_eval.jsonl"  # the fine-tuning run's recgpt_rec_eval points, plotted in the report
[ -f "$curve" ] && EVAL_ARGS="training_curve=$curve $EVAL_ARGS"
# shellcheck disable=SC2086
recgpt evaluate "$EVAL_CONFIG" model="$DEMO_DIR/fine-tuning/hf/huggingface/final" \
  data="$DEMO_DIR/data" output="$DEMO_DIR/eval" mlflow="file:$MLRUNS" mlflow_experiment=recgpt-demo \
  $EVAL_ARGS > "$DEMO_DIR/eval-table.txt"
head -n -1 "$DEMO_DIR/eval-table.txt" >&2

step "5/5 serving: recgpt serve, then one test user's top-10 and a rating over HTTP"
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
recgpt serve configs/serve/demo.yaml model="$DEMO_DIR/fine-tuning/hf/huggingface/final" catalog="$DEMO_DIR/data" \
  port="$port" > "$DEMO_DIR/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
python scripts/ask_service.py --url "http://127.0.0.1:$port" --data "$DEMO_DIR/data" --k 10 >&2
kill "$server" && wait "$server" 2>/dev/null || true

echo "Every run is tracked (losses, evaluation metrics, the report); open them with: mlflow ui --backend-store-uri $MLRUNS" >&2
step "done in $(( $(date +%s) - started ))s; the report:"
tail -n 1 "$DEMO_DIR/eval-table.txt"
