#!/usr/bin/env bash
# Parity check for refactors: run the same three small recipes (MoCo v2 2 epochs on
# fmnist-mini with kNN/linear, an MDP pretraining + fine-tuning smoke run, a train-uvos smoke
# run) from source tree $1 into $2, then compare two trees with scripts/parity_digest.py.
# Run with OMP_NUM_THREADS=1: the MDP run is not bit-reproducible across runs with 2 intra-op
# threads (it is with 1).
set -euo pipefail
SRC=$1; OUT=$2; rm -rf "$OUT"; mkdir -p "$OUT"
export PYTHONPATH=$(cd "$SRC" && pwd)/src
PY=${PYTHON:-python}
cd "$SRC"
# 1. moco_v2 on fmnist-mini, 2 epochs
$PY -m vislearn pretrain moco_v2 --config configs/fmnist_ssl/moco_v2.yaml --data fmnist-mini \
  trainer.max_epochs=2 trainer.check_val_every_n_epoch=2 trainer.progress=false \
  eval.linear_epochs=20 eval.embedding_plot=false --eval --out "$OUT/moco" > "$OUT/moco.log" 2>&1
# 2. seg: MDP pretraining + fine-tuning smoke
mkdir -p "$OUT/nobg"
D="--image-size 32 --num-train 32 --num-test 16 --cache-dir $OUT/segcache --set data.background_dir=$OUT/nobg"
T="$D --batch-size 4 --steps 6 --accelerator cpu --devices 1 --set trainer.progress=false"
$PY -m vislearn seg pretrain --method mdp --out "$OUT/segpre" $T --set "model.backbone_kwargs={stem: small_ds, width: 8}" model.head_channels=16 > "$OUT/seg.log" 2>&1
$PY -m vislearn seg finetune --init "$OUT/segpre/pretrained.safetensors" --target synthetic:coarse --fraction 0.5 --out "$OUT/segft" $T >> "$OUT/seg.log" 2>&1
# 3. train-uvos smoke on a tiny random ViT
$PY - "$OUT" <<'PY'
import sys, torch
sys.path.insert(0, ".")
from vislearn.models import create_backbone
torch.manual_seed(0)
vit = create_backbone("vit_mini", in_chans=3, img_size=32, patch_size=8)
torch.save(vit.state_dict(), f"{sys.argv[1]}/vit.pth")
PY
$PY -m vislearn train-uvos synthetic --weights "$OUT/vit.pth" --arch vit_mini --patch-size 8 --img-size 32 \
  --resolution 32 32 --out "$OUT/uvos" --epochs 1 --batch-size 2 --samples-per-epoch 8 --workers 0 \
  --accelerator cpu --devices 1 --no-progress --synthetic-videos 4 > "$OUT/uvos.log" 2>&1
echo done
