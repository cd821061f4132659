#!/bin/bash
# On a GPU machine, from the repository root, with .gpu4/ carried: the
# release `switchyard` binary and the scheduler's test binary, gzipped.
# Runs NVML for real: the telemetry test, then a gateway whose two local
# backends (SIMULATED engines standing in for inference servers) take their
# GPU health from this machine's real NVML, one directly (`telemetry =
# "nvml"`) and one through `switchyard agent` (`telemetry = "agent"`),
# while PyTorch loads the GPU; then the agent is killed and restarted.
# See docs/scheduling.md, "NVML on a real GPU".
set -u
O=${OUT:-/tmp/out}; mkdir -p "$O"
gunzip -c .gpu4/switchyard.gz > /tmp/sy && gunzip -c .gpu4/sched_test.gz > /tmp/sched_test && chmod +x /tmp/sy /tmp/sched_test
for d in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu; do ls $d/libnvidia-ml.so.1 2>/dev/null; done
nvidia-smi --query-gpu=name,uuid,driver_version,memory.total --format=csv
echo "=== telemetry test, NVML required"
SWITCHYARD_TEST_NVML=1 /tmp/sched_test nvml --nocapture 2>&1 | grep -vE "^$|running [0-9]+ test" | cut -c1-600
cat > /tmp/gw.toml <<'TOML'
[server]
listen = "127.0.0.1:8080"
[logging]
format = "text"
[scheduler]
mode = "prefer_local"
ttft_slo_ms = 1500
[providers.sim-engine-nvml]
type = "openai_compat"
base_url = "http://127.0.0.1:9910/v1"
local = { gpu = "h100", gpu_hour_usd = 2.49, permits = 32, telemetry = "nvml", gpus = ["0"] }
[providers.sim-engine-agent]
type = "openai_compat"
base_url = "http://127.0.0.1:9911/v1"
local = { gpu = "h100", gpu_hour_usd = 2.49, permits = 32, telemetry = "agent", agent = "http://127.0.0.1:9950", gpus = ["0"] }
[[model_groups]]
name = "llama-3.1-8b"
[[model_groups.deployments]]
provider = "sim-engine-nvml"
model = "llama-3.1-8b"
[[model_groups.deployments]]
provider = "sim-engine-agent"
model = "llama-3.1-8b"
TOML
/tmp/sy sim --listen 127.0.0.1:9910 --engine h100:llama-3.1-8b --engine h100:llama-3.1-8b > $O/sim.log 2>&1 &
/tmp/sy agent --telemetry nvml --listen 127.0.0.1:9950 > $O/agent.log 2>&1 &
agent=$!
/tmp/sy serve --config /tmp/gw.toml > $O/gateway.log 2>&1 &
sleep 4
snap() { # label
  local t=$(date +%s.%N)
  curl -s 127.0.0.1:8080/api/v1/fleet > /tmp/f.json
  nvidia-smi --query-gpu=utilization.gpu,memory.used,power.draw,power.limit,temperature.gpu,clocks_throttle_reasons.active --format=csv,noheader > /tmp/smi.txt
  python3 - "$1" <<'PY'
import json,sys
f=json.load(open('/tmp/f.json')); smi=open('/tmp/smi.txt').read().strip()
for b in f['backends']:
    g=b['gpus'][0] if b['gpus'] else {}
    print(f"{sys.argv[1]:>10} {b['name']:<17} {b['health']}/{b['health_reason']:<16} age={b['telemetry_age_s']} util={g.get('utilization_pct')}% mem={g.get('memory_used_bytes',0)/2**20:.0f}/{g.get('memory_total_bytes',0)/2**20:.0f}MiB power={g.get('power_w')}/{g.get('power_limit_w')}W temp={g.get('temperature_c')}C throttle={g.get('throttle')} xid={g.get('xid_errors')} ecc={g.get('ecc_uncorrected')} sim={g.get('simulated')}")
print(f"{'':>10} nvidia-smi: {smi}")
PY
  cp /tmp/f.json $O/fleet_$1.json
}
echo "=== idle"; snap idle
cat > /tmp/load.py <<'PY'
import torch,time
a=torch.randn(8192,8192,device='cuda',dtype=torch.bfloat16); b=torch.randn_like(a)
t=time.time()
while time.time()-t<20:
    for _ in range(50): c=a@b
    torch.cuda.synchronize()
PY
python3 /tmp/load.py & load=$!
# (PyTorch takes a few seconds to start.)
sleep 10; echo "=== under a bf16 matmul load"; snap load1
sleep 4; snap load2
echo "=== placement with real telemetry"
for i in 1 2 3 4; do curl -s -D - -o /dev/null 127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' -d '{"model":"llama-3.1-8b","messages":[{"role":"user","content":"hi '$i'"}],"max_tokens":8}' | grep -i "x-switchyard-placement"; done
wait $load
sleep 3; echo "=== after the load"; snap after
echo "=== agent killed (SIGKILL)"; kill -9 $agent; sleep 7; snap agentdead
/tmp/sy agent --telemetry nvml --listen 127.0.0.1:9950 >> $O/agent.log 2>&1 &
# The gateway reconnects with backoff (0.1 s doubling to 5 s).
sleep 12; echo "=== agent restarted"; snap agentback
grep -iE "nvml|agent|health" $O/gateway.log | cut -c1-200
head -5 $O/agent.log | cut -c1-300
