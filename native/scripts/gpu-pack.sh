#!/usr/bin/env bash
# Run here, from the repository root, before a GPU run: puts into .gpu/ (git-ignored) what the GPU machine lacks
# and `carry` must bring: a Node binary (.gpu/node.xz, via ../shared/tools/gpu-pack-node.sh), the Node-API
# headers (node-addon-api, node-api-headers), the compiled TypeScript (native/dist) and gpu-env.sh.
# The addon itself is built there by native/scripts/gpu-test.sh. Then: run with carry [".gpu"] and the command
#   bash native/scripts/gpu-test.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
test -d native/dist || { echo "native/dist missing: run npm run build first" >&2; exit 1; }
if [ -x ../shared/tools/gpu-pack-node.sh ]; then
  ../shared/tools/gpu-pack-node.sh
  cp ../shared/tools/gpu-env.sh .gpu/gpu-env.sh
else
  test -s .gpu/node.xz || { echo "no ../shared/tools/gpu-pack-node.sh and no .gpu/node.xz" >&2; exit 1; }
fi
rm -rf .gpu/node_modules .gpu/native-dist
mkdir -p .gpu/node_modules
cp -r node_modules/node-addon-api node_modules/node-api-headers .gpu/node_modules/
cp -r native/dist .gpu/native-dist
du -sh .gpu
