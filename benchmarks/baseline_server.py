"""The baseline for `serve_bench.py`: a minimal FastAPI app with per-request eager inference at 224 px.

This is how the course project served its model: one process, the image decoded and resized to 224 px in the
request handler, an eager float32 forward pass per request (no batching, no channels_last, no ONNX).
Run: `python benchmarks/baseline_server.py --checkpoint CKPT --port 8001 --threads 2`.
"""

from __future__ import annotations

import argparse
import io
from typing import Annotated

import timm
import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile
from PIL import Image
from torchvision import transforms

from imagenette_drift.card import CHECKPOINT_KEY
from imagenette_drift.checkpoint import STATE_PREFIX, read_checkpoint


def create_app(checkpoint_path: str) -> FastAPI:
    checkpoint = read_checkpoint(checkpoint_path)
    card = checkpoint[CHECKPOINT_KEY]
    model = timm.create_model(card["model_name"], num_classes=len(card["class_names"]), pretrained=False)
    prefix = STATE_PREFIX + "backbone."
    model.load_state_dict(
        {k.removeprefix(prefix): v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    )
    model.eval()
    preprocess = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(card["mean"], card["std"]),
        ]
    )
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(file: Annotated[UploadFile, File()]) -> dict:
        image = Image.open(io.BytesIO(await file.read())).convert("RGB")
        with torch.no_grad():
            probs = model(preprocess(image).unsqueeze(0)).softmax(dim=1)[0]
        top = probs.topk(5)
        top_k = [
            {"label": card["class_names"][i], "wnid": card["wnids"][i], "probability": float(p)}
            for p, i in zip(top.values, top.indices, strict=True)
        ]
        return {"label": top_k[0]["label"], "confidence": top_k[0]["probability"], "top_k": top_k}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    uvicorn.run(create_app(args.checkpoint), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
