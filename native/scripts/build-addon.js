#!/usr/bin/env node
// Builds native/build/Release/fluxlab.node with cmake-js (offline: package.json's binary.napi_versions makes
// cmake-js take the Node-API headers from node-api-headers). Environment knobs, passed to CMake:
//   FLUXLAB_CPU_ONLY=1        build without the CUDA backend even when nvcc is present
//   FLUXLAB_CUDA_ARCHS=90a;80 override the CUDA targets (default: 90a, 80 and compute_80 PTX)
//   FLUXLAB_BUILD_TYPE=Debug  CMake build type (default Release)
'use strict';
const { spawnSync } = require('node:child_process');
const { join } = require('node:path');

const root = join(__dirname, '..');
const args = ['build', '--directory', root, '--out', join(root, 'build')];
const config = process.env.FLUXLAB_BUILD_TYPE ?? 'Release';
args.push('--config', config);
if (process.env.FLUXLAB_CPU_ONLY === '1') args.push('--CDFLUXLAB_CUDA=OFF');
if (process.env.FLUXLAB_CUDA_ARCHS) args.push(`--CDFLUXLAB_CUDA_ARCHS=${process.env.FLUXLAB_CUDA_ARCHS}`);

const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const run = spawnSync(process.execPath, [cmakeJs, ...args], { stdio: 'inherit', cwd: root });
process.exit(run.status ?? 1);
