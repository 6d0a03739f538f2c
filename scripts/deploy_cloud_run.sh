#!/usr/bin/env bash
# Build Dockerfile.serve and deploy it to Cloud Run, serving the checkpoint at MODEL_URI (gs://BUCKET/OBJECT).
#
#   MODEL_URI=gs://my-models/imagenette/last.ckpt PROJECT=my-project scripts/deploy_cloud_run.sh
#
# Settings (environment variables, defaults in brackets): PROJECT [gcloud's], REGION [europe-west1],
# SERVICE [imagenette-serve], REPOSITORY [imagenette] (Artifact Registry, created if missing), TAG [git short
# sha], CPU [2], MEMORY [2Gi], CONCURRENCY [16 requests per instance], MIN_INSTANCES [0], MAX_INSTANCES [3],
# RUNTIME [onnx], SERVICE_ACCOUNT [the default compute account; it needs roles/storage.objectViewer on the
# bucket], ALLOW_UNAUTHENTICATED [0], DRY_RUN [0: 1 prints the commands instead of running them].
set -euo pipefail

: "${MODEL_URI:?set MODEL_URI=gs://BUCKET/path/last.ckpt (the checkpoint to serve)}"
case "$MODEL_URI" in gs://?*/?*) ;; *) echo "MODEL_URI must look like gs://BUCKET/OBJECT, got $MODEL_URI" >&2; exit 2 ;; esac

run() {
    if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

if [[ -z "${PROJECT:-}" ]]; then
    PROJECT="$( [[ "${DRY_RUN:-0}" == 1 ]] && echo my-project || gcloud config get-value project 2>/dev/null)"
fi
REGION="${REGION:-europe-west1}"
SERVICE="${SERVICE:-imagenette-serve}"
REPOSITORY="${REPOSITORY:-imagenette}"
TAG="${TAG:-$(git rev-parse --short HEAD 2>/dev/null || echo latest)}"
IMAGE="${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}/${SERVICE}:${TAG}"
CPU="${CPU:-2}"
MEMORY="${MEMORY:-2Gi}"
CONCURRENCY="${CONCURRENCY:-16}"
RUNTIME="${RUNTIME:-onnx}"

cd "$(dirname "$0")/.."
if [[ "${DRY_RUN:-0}" != 1 ]] && ! gcloud artifacts repositories describe "$REPOSITORY" --project "$PROJECT" --location "$REGION" >/dev/null 2>&1; then
    run gcloud artifacts repositories create "$REPOSITORY" --project "$PROJECT" --location "$REGION" --repository-format docker
fi

# Cloud Build builds a file named Dockerfile with --tag; for Dockerfile.serve it needs a one-step config.
config="$(mktemp)"
trap 'rm -f "$config"' EXIT
cat > "$config" <<YAML
steps:
  - name: gcr.io/cloud-builders/docker
    args: [build, -f, Dockerfile.serve, -t, "${IMAGE}", .]
images: ["${IMAGE}"]
YAML
run gcloud builds submit --project "$PROJECT" --config "$config" .

deploy=(
    gcloud run deploy "$SERVICE"
    --project "$PROJECT" --region "$REGION" --image "$IMAGE"
    --cpu "$CPU" --memory "$MEMORY" --concurrency "$CONCURRENCY"
    --min-instances "${MIN_INSTANCES:-0}" --max-instances "${MAX_INSTANCES:-3}"
    --cpu-boost --timeout 60
    --set-env-vars "MODEL_URI=${MODEL_URI}"
    # one inference worker using every vCPU (workers x threads <= cores); Cloud Run sets PORT
    --args "--workers=1,--threads=${CPU},--runtime=${RUNTIME}"
)
[[ -n "${SERVICE_ACCOUNT:-}" ]] && deploy+=(--service-account "$SERVICE_ACCOUNT")
if [[ "${ALLOW_UNAUTHENTICATED:-0}" == 1 ]]; then deploy+=(--allow-unauthenticated); else deploy+=(--no-allow-unauthenticated); fi
run "${deploy[@]}"
