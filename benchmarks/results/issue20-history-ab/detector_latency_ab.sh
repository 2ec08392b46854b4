#!/bin/bash
# A/B of benchmarks/detector_latency.py: base (7f87f0b, the branch point) and history, alternating.
for i in 1 2; do for v in base history; do
  d=/work/wt-history; [ $v = base ] && d=/work/wt-history-base
  (cd $d && echo "load: $(cat /proc/loadavg)" && OMP_NUM_THREADS=1 PYTHONPATH=$d/src timeout 900 /work/main/.venv/bin/python benchmarks/detector_latency.py --model lstm --state "$1" --measure 3000 --explain none && echo "load after: $(cat /proc/loadavg)") > /tmp/wt-history-bench/$v-$2-$i.txt 2>&1
done; done
