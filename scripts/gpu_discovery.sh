#!/usr/bin/env bash
# Spark GPU discovery script ([spark] executor_gpus > 0 sets
# spark.executor.resource.gpu.discoveryScript to this file): prints the executor's GPU
# addresses as Spark's ResourceInformation JSON, e.g. {"name": "gpu", "addresses": ["0","1"]}.
set -euo pipefail
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo '{"name": "gpu", "addresses": []}'; exit 0
fi
ADDRS=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed -e 's/^/"/' -e 's/$/"/' | paste -sd, -)
echo "{\"name\": \"gpu\", \"addresses\": [${ADDRS}]}"
