#!/bin/bash
# On the GPU machine (device tool), from the repository root, with
# .cuda/candle-kernels carried: compile candle-kernels' PTX and libmoe.a for
# sm_90 with nvcc, and list the CUDA libraries' SONAMEs and symbols.
set -u
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv
nvcc --version | tail -2
cd .cuda/candle-kernels
W=/tmp/w; mkdir -p $W/ptx $W/obj
ls src/*.cu | grep -v -E 'moe_|mmvq_gguf|mmq_' | xargs -P 16 -I{} sh -c 'b=$(basename {} .cu); nvcc --ptx --expt-relaxed-constexpr -std=c++17 -O3 -arch=sm_90 {} -o '$W'/ptx/$b.ptx || echo "PTX FAIL $b"'
MOE="src/moe/moe_gguf.cu src/moe/moe_wmma.cu src/moe/moe_wmma_gguf.cu src/mmvq_gguf.cu src/mmq_gguf/mmq_quantize.cu src/mmq_gguf/mmq_instance_q4_0.cu src/mmq_gguf/mmq_instance_q4_1.cu src/mmq_gguf/mmq_instance_q5_0.cu src/mmq_gguf/mmq_instance_q5_1.cu src/mmq_gguf/mmq_instance_q8_0.cu src/mmq_gguf/mmq_instance_q2_k.cu src/mmq_gguf/mmq_instance_q3_k.cu src/mmq_gguf/mmq_instance_q4_k.cu src/mmq_gguf/mmq_instance_q5_k.cu src/mmq_gguf/mmq_instance_q6_k.cu"
echo $MOE | tr ' ' '\n' | xargs -P 16 -I{} sh -c 'b=$(echo {} | tr / _); nvcc -c --expt-relaxed-constexpr -std=c++17 -O3 -arch=sm_90 -Xcompiler -fPIC {} -o '$W'/obj/$b.o || echo "OBJ FAIL {}"'
ar rcs $W/libmoe.a $W/obj/*.o
ls -la $W/ptx $W/libmoe.a
# The CUDA libraries cudarc links, their SONAMEs and exported symbols.
mkdir -p $W/libs
for l in cuda cudart cublas cublasLt curand nvrtc; do
  p=$(ldconfig -p | grep -E "lib$l\.so(\.[0-9]+)* " | head -1 | awk '{print $NF}')
  [ -z "$p" ] && p=$(find / -name "lib$l.so*" -not -path "/proc/*" 2>/dev/null | head -1)
  echo "$l -> $p"
  [ -n "$p" ] || continue
  soname=$(objdump -p "$p" 2>/dev/null | awk '/SONAME/{print $2}')
  echo "$soname" > $W/libs/$l.soname
  nm -D --defined-only "$p" | awk '{print $NF}' | sed 's/@.*//' | sort -u > $W/libs/$l.syms
  echo "  soname=$soname syms=$(wc -l < $W/libs/$l.syms) dir=$(dirname $p)"
done
echo "HF caches:"; ls -d /root/.cache/huggingface/hub/* 2>/dev/null | head; find / -name "*.safetensors" -path "*MiniLM*" 2>/dev/null | head -3
cd $W && tar czf - ptx libmoe.a libs | split -b 15M - $OUT/cuda_a.tgz. && ls -la $OUT   # files come back in 16 MiB pieces
