// Resolves a Hugging Face repo id ("black-forest-labs/FLUX.1-dev") to a snapshot directory of the local hub cache,
// the way huggingface_hub lays it out: <cache>/models--<org>--<name>/{refs/<revision>, snapshots/<commit>/, blobs/}.
// Files in a snapshot are symlinks into blobs/; every reader here follows them. Nothing is downloaded.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

function expandHome(path: string, home: string): string {
  return path === '~' || path.startsWith('~/') ? join(home, path.slice(1)) : path;
}

/** The hub cache directory, with huggingface_hub's precedence: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub, XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub. */
export function huggingFaceCacheDir(env: NodeJS.ProcessEnv = process.env, home: string = homedir()): string {
  const direct = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  if (direct) return expandHome(direct, home);
  const hfHome = env.HF_HOME
    ? expandHome(env.HF_HOME, home)
    : join(env.XDG_CACHE_HOME ? expandHome(env.XDG_CACHE_HOME, home) : join(home, '.cache'), 'huggingface');
  return join(hfHome, 'hub');
}

/** "org/name" with the characters the hub allows; paths ("./x", "/x", "a/b/c") are not repo ids. */
export function isRepoId(value: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/.test(value) && !value.includes('..');
}

export interface ResolveModelOptions {
  /** Branch, tag or commit (default 'main'), resolved through refs/ as huggingface_hub does. */
  revision?: string;
  /** Overrides the cache directory derived from the environment. */
  cacheDir?: string;
  env?: NodeJS.ProcessEnv;
}

/** A directory as given, or the cached snapshot of a repo id. Throws a message saying where it looked. */
export function resolveModelDir(pathOrRepoId: string, options: ResolveModelOptions = {}): string {
  if (existsSync(pathOrRepoId) && statSync(pathOrRepoId).isDirectory()) return resolve(pathOrRepoId);
  if (!isRepoId(pathOrRepoId)) {
    throw new Error(`model '${pathOrRepoId}' is not a directory (and not a Hugging Face repo id of the form org/name)`);
  }
  const cacheDir = options.cacheDir ?? huggingFaceCacheDir(options.env);
  const repoDir = join(cacheDir, `models--${pathOrRepoId.replace('/', '--')}`);
  const download = `download it first (e.g. \`huggingface-cli download ${pathOrRepoId}\`) or pass a directory`;
  if (!existsSync(repoDir)) {
    throw new Error(
      `model '${pathOrRepoId}' is not a directory and is not in the Hugging Face cache (looked for ${repoDir}; ` +
        `the cache is HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub): ${download}`,
    );
  }
  const revision = options.revision ?? 'main';
  const refFile = join(repoDir, 'refs', revision);
  let commit: string | undefined;
  if (existsSync(refFile) && statSync(refFile).isFile()) commit = readFileSync(refFile, 'utf8').trim();
  else if (/^[0-9a-f]{40}$/.test(revision)) commit = revision;
  const snapshots = join(repoDir, 'snapshots');
  const available = existsSync(snapshots) ? readdirSync(snapshots) : [];
  if (commit === undefined || !available.includes(commit)) {
    throw new Error(
      `model '${pathOrRepoId}': no snapshot for revision '${revision}' in ${repoDir}` +
        (commit !== undefined ? ` (refs/${revision} points to ${commit}, which is not in snapshots/)` : '') +
        `; snapshots present: ${available.length > 0 ? available.join(', ') : 'none'}: ${download}`,
    );
  }
  return join(snapshots, commit);
}
