#!/usr/bin/env bash
# Run here, from the repository root, after `npm run build`: fills the git-ignored .gpu/ with what the GPU machine
# lacks and `carry` must bring: a Node binary (.gpu/node.xz), the Node-API headers, and the compiled TypeScript of
# every workspace. The addon itself is built there (scripts/gpu-test.sh), on its 16 cores. Then call the device
# tool with carry [".gpu"] and the command `bash scripts/gpu-test.sh [suite ...]`.
set -euo pipefail
cd "$(dirname "$0")/.."
for dist in native/dist kernel/dist; do
  test -d "$dist" || { echo "$dist missing: run npm run build first" >&2; exit 1; }
done
if [ -x ../shared/tools/gpu-pack-node.sh ]; then
  ../shared/tools/gpu-pack-node.sh
  cp ../shared/tools/gpu-env.sh .gpu/gpu-env.sh
else
  test -s .gpu/node.xz || { echo "no ../shared/tools/gpu-pack-node.sh and no .gpu/node.xz" >&2; exit 1; }
fi
rm -rf .gpu/node_modules .gpu/dist .gpu/native-dist
mkdir -p .gpu/node_modules .gpu/dist
cp -r node_modules/node-addon-api node_modules/node-api-headers .gpu/node_modules/
tar -cf .gpu/dist/dist.tar native/dist kernel/dist
# The notebooks as scripts (no Jupyter or kernel dependencies there): gpu-test.sh notebooks runs them.
rm -rf .gpu/notebooks && mkdir -p .gpu/notebooks
for nb in notebooks/*.ipynb; do node scripts/notebook-script.mjs "$nb" ".gpu/notebooks/$(basename "${nb%.ipynb}").js"; done
# The commit the figures of `gpu-test.sh bench` belong to (+changes: the working tree differs from it).
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo +changes)" > .gpu/commit
du -sh .gpu
