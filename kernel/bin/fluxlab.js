#!/usr/bin/env node
'use strict';
// The `fluxlab` command (compiled code lives in ../dist; `npm run build` produces it).
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const entry = join(__dirname, '..', 'dist', 'cli', 'main.js');
if (!existsSync(entry)) {
  process.stderr.write(`fluxlab is not built (${entry} is missing): run \`npm run build\` in the repository first.\n`);
  process.exit(1);
}
require(entry)
  .main(process.argv.slice(2))
  .then(
    (status) => {
      process.exitCode = status;
    },
    (error) => {
      process.stderr.write(`fluxlab: ${error && error.stack ? error.stack : String(error)}\n`);
      process.exitCode = 1;
    },
  );
