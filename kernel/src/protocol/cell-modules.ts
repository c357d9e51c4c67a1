// The `require` a cell runs with. TypeScript compiles a cell's imports to require() calls (see
// cell-compiler.ts); this decides what they load:
// - 'fluxlab:scope' → the notebook's persistent scope object;
// - 'fluxlab' → this package's own entry, whatever folder the notebook is in, and the very module instance the
//   kernel itself uses (so runtime contracts such as onInterrupt reach the kernel);
// - node builtins → themselves;
// - anything else → resolved from the notebook's working directory (its node_modules, relative paths), the
//   way `node` resolves imports of a script in that folder. ES modules load through require(esm).
import { createRequire, isBuiltin } from 'node:module';
import { join } from 'node:path';
import { SCOPE_SPECIFIER } from './cell-compiler.js';

export interface CellRequire {
  (specifier: string): unknown;
  resolve(specifier: string): string;
}

export interface CellModuleOptions {
  scope: object;
  /** Absolute path of the module that `import … from 'fluxlab'` loads. */
  packageEntry: string;
  /** The folder bare and relative specifiers resolve from (the kernel's cwd, i.e. the notebook's folder). */
  cwd?: () => string;
}

export function createCellRequire(options: CellModuleOptions): CellRequire {
  const cwd = options.cwd ?? (() => process.cwd());
  const requirers = new Map<string, NodeJS.Require>();
  const requireFromCwd = (): NodeJS.Require => {
    const dir = cwd();
    let requirer = requirers.get(dir);
    if (requirer === undefined) {
      requirer = createRequire(join(dir, '[notebook]'));
      requirers.set(dir, requirer);
    }
    return requirer;
  };
  const resolve = (specifier: string): string => {
    if (specifier === 'fluxlab') return options.packageEntry;
    if (isBuiltin(specifier)) return specifier;
    return requireFromCwd().resolve(specifier);
  };
  const cellRequire = ((specifier: string): unknown => {
    if (typeof specifier !== 'string') throw new TypeError('require() needs a module specifier string');
    if (specifier === SCOPE_SPECIFIER) return options.scope;
    if (specifier === 'fluxlab' || isBuiltin(specifier)) return require(resolve(specifier));
    return requireFromCwd()(specifier);
  }) as CellRequire;
  cellRequire.resolve = resolve;
  return cellRequire;
}

interface EsModuleLike {
  __esModule?: boolean;
  default?: unknown;
}

/** `import x from 'm'`: TypeScript's esModuleInterop (ES modules and transpiled CommonJS give `default`). */
export function importDefault(module: unknown): unknown {
  return typeof module === 'object' && module !== null && (module as EsModuleLike).__esModule === true
    ? (module as EsModuleLike).default
    : module;
}

/** `import * as ns from 'm'`: an ES module as is; a CommonJS module's properties plus `default`. */
export function importStar(module: unknown): unknown {
  if ((typeof module !== 'object' && typeof module !== 'function') || module === null) return { default: module };
  if ((module as EsModuleLike).__esModule === true) return module;
  const namespace: Record<string, unknown> = {};
  for (const key of Object.keys(module)) {
    if (key !== 'default') Object.defineProperty(namespace, key, { enumerable: true, get: () => (module as Record<string, unknown>)[key] });
  }
  namespace.default = module;
  return namespace;
}
