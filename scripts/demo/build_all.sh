#!/usr/bin/env sh
# Rebuilds the whole offline demo model set (demo_models/, precomputed/demo/) in dependency order with
# the project's own commands; see demo_models/README.md for what each step measures and how long it
# took. Every step is seeded; runs are deterministic for the same thread counts.
set -eu
cd "$(dirname "$0")/../.."
T="${THREADS:-2}"

# 1. attribute oracle and identity network: trained on renders only
# (the second oracle stage adds faces blended part-way to a one-attribute variant, as edits produce)
python -m scripts.demo.train_oracle --out demo_models/oracle.stage1.pt --threads "$T"
python -m scripts.demo.train_oracle --init demo_models/oracle.stage1.pt --out demo_models/oracle.pt \
    --steps 500 --lr 1e-3 --blend-share 0.5 --half --threads "$T"
rm -f demo_models/oracle.stage1.pt demo_models/oracle.stage1.json
python -m scripts.demo.train_identity --out demo_models/model_ir_se_demo.pth --threads "$T"

# 2. generator: constructed mapping, synthesis trained as a decoder in four stages (plain L1; then
#    extra weight on fine detail; then a squared-error term that draws eyes, mouths and glasses frames;
#    then half of each batch part-way through a one-attribute edit, so in-between latents stay faces;
#    then one attribute, and finally one code dimension, per S channel: a disentangled StyleSpace)
G=demo_models/stylegan2-demo
python -m scripts.demo.train_generator --out $G.stage1.pt --steps 7000 --stop-after 4000 --threads 1
python -m scripts.demo.train_generator --init $G.stage1.pt --out $G.stage2.pt --steps 3000 \
    --stop-after 2000 --detail-lambda 2 --lr 1.5e-3 --threads 1
python -m scripts.demo.train_generator --init $G.stage2.pt --out $G.stage3.pt --steps 3000 \
    --detail-lambda 2 --l2-lambda 4 --lr 1.5e-3 --threads 1
python -m scripts.demo.train_generator --init $G.stage3.pt --out $G.stage4.pt --steps 1500 \
    --detail-lambda 2 --l2-lambda 4 --lr 1e-3 --soft-share 0.5 --threads 2
python -m scripts.demo.train_generator --init $G.stage4.pt --out $G.stage5.pt --steps 3000 \
    --detail-lambda 2 --l2-lambda 4 --lr 1.5e-3 --soft-share 0.5 --grouped-styles attribute --threads 2
python -m scripts.demo.train_generator --init $G.stage5.pt --out $G.pt --steps 2000 \
    --detail-lambda 2 --l2-lambda 4 --lr 1e-3 --soft-share 0.5 --grouped-styles dimension --half --threads 2
for i in 1 2 3 4 5; do rm -f $G.stage$i.pt $G.stage$i.json; done

# 3. CLIP and its caption tokenizer: trained on renders and captions only
python -m scripts.demo.train_clip --out demo_models/clip-demo --steps 1500 --half --threads 1

# 4. e4e encoder: W+ regression onto the known latents (only the constructed mapping is needed, so an
#    untrained generator G0 serves), then the full loss through the final generator
python -c "from pathlib import Path; from scripts.demo.train_generator import *; \
save_generator(make_generator(GeneratorTrainConfig()).eval(), Path('demo_models/G0.pt'), n_avg=2000)"
E=demo_models/e4e
python -m scripts.demo.train_encoder --generator demo_models/G0.pt --out $E.1.pt --code-steps 2500 --steps 0 --threads 1
python -m scripts.demo.train_encoder --generator demo_models/G0.pt --init $E.1.pt --out $E.2.pt \
    --code-steps 1500 --steps 0 --lr 2e-3 --batch 32 --threads 1
python -m scripts.demo.train_encoder --generator demo_models/G0.pt --init $E.2.pt --out $E.3.pt \
    --code-steps 2000 --steps 0 --lr 2e-3 --batch 32 --threads 1
python -m scripts.demo.train_encoder --generator demo_models/G0.pt --init $E.3.pt --out $E.4.pt \
    --code-steps 1000 --steps 0 --lr 1e-3 --batch 32 --threads 1
python -m scripts.demo.train_encoder --generator demo_models/stylegan2-demo.pt --init $E.4.pt \
    --out demo_models/e4e_demo_encode.pt --code-steps 0 --steps 800 --lr 5e-4 --half --threads 1
rm -f demo_models/G0.pt demo_models/G0.json $E.1.* $E.2.* $E.3.* $E.4.*

# 5. S statistics and channel relevance (global directions), then five mappers on the W+ rows where
#    the attribute lives in this generator (hair colour: medium + fine rows 4-9; bald, glasses and
#    beard: coarse rows 0-3)
rm -rf precomputed/demo
python -m editing precompute --models demo --out precomputed/demo --n-images 30 --batch 64
m() {
    OMP_NUM_THREADS=1 python -m editing train-mapper --models demo --out "demo_models/mappers/$1.pt" \
        --prompt "$2" $3 --steps "$4" --batch-size 8 --loss-size full --half --seed 0 \
        --state "/tmp/$1.state.pt"
}
mkdir -p demo_models/mappers
m purple_hair "purple hair" "--no-coarse" 2400
m blond_hair "blond hair" "--no-coarse" 2400
m bald "bald" "--no-medium --no-fine" 1000
m glasses "glasses" "--no-medium --no-fine" 1000
m beard "beard" "--no-medium --no-fine" 2000

# 6. README figures and the evaluation
python -m scripts.demo.figures --out docs/demo
python -m editing evaluate --models demo --faces 20
