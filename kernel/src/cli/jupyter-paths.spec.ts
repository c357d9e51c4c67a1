import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { dataDir, pythonPrefix, userDataDir } from './jupyter-paths.js';

describe('Jupyter data directories', () => {
  it('follows jupyter_core for the user directory', () => {
    assert.equal(userDataDir({ JUPYTER_DATA_DIR: '/custom' }, 'linux', '/home/u'), '/custom');
    assert.equal(userDataDir({}, 'linux', '/home/u'), '/home/u/.local/share/jupyter');
    assert.equal(userDataDir({ XDG_DATA_HOME: '/xdg' }, 'linux', '/home/u'), '/xdg/jupyter');
    assert.equal(userDataDir({}, 'darwin', '/Users/u'), '/Users/u/Library/Jupyter');
    assert.equal(userDataDir({ APPDATA: 'C:\\AppData' }, 'win32', 'C:\\u'), join('C:\\AppData', 'jupyter'));
  });

  it('uses the active virtualenv or conda environment for --sys-prefix, and DIR/share/jupyter for --prefix', () => {
    assert.equal(pythonPrefix({ VIRTUAL_ENV: '/venv' }), '/venv');
    assert.equal(pythonPrefix({ CONDA_PREFIX: '/conda' }), '/conda');
    assert.equal(dataDir({ kind: 'sys-prefix' }, { VIRTUAL_ENV: '/venv' }), '/venv/share/jupyter');
    assert.equal(dataDir({ kind: 'prefix', prefix: '/opt/x' }), '/opt/x/share/jupyter');
    assert.throws(() => pythonPrefix({ PYTHON: '/nonexistent/python' }), /--prefix/);
  });
});
