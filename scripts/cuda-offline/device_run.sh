#!/bin/bash
# On the GPU machine, from the repository root, with the model staged in
# /root/stage (model.part1) and .gpu2 carried (model.part2, the small model
# files): see docs/embeddings.md, Devices.
set -u
S=/root/stage
mkdir -p models/all-MiniLM-L6-v2 && cp -r .gpu2/model/* models/all-MiniLM-L6-v2/ && cat $S/model.part1 .gpu2/model.part2 > models/all-MiniLM-L6-v2/model.safetensors
sha256sum models/all-MiniLM-L6-v2/model.safetensors | cut -c1-16
gunzip -c $S/embed_throughput.gz > /tmp/embed_throughput && gunzip -c $S/model_test.gz > /tmp/model_test && chmod +x /tmp/embed_throughput /tmp/model_test
export LD_LIBRARY_PATH=/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv
for p in f32 f16 bf16; do
  echo "=== model tests on cuda:0 $p"
  SWITCHYARD_TEST_DEVICE=cuda:0 SWITCHYARD_TEST_PRECISION=$p /tmp/model_test --test-threads 1 --nocapture 2>&1 | grep -E "lowest|test result|FAILED|panicked" | cut -c1-300
done
python3 -c "import sentence_transformers, torch; print('st', sentence_transformers.__version__, 'torch', torch.__version__)"
for p in f32 f16 bf16; do
  echo "=== embed_throughput cuda:0 $p"
  /tmp/embed_throughput --device cuda:0 --precision $p --python python3 --seconds 2 --latency-samples 200 --out $OUT/embed_cuda_$p.json 2>&1 | tail -16
done
echo "=== CPU of this machine (16 cores), for reference"
/tmp/embed_throughput --device cpu --seconds 1 --latency-samples 100 --out $OUT/embed_cpu16.json 2>&1 | tail -14
