// The progress a generation shows by default, as diffusers shows a tqdm bar: one display updated in place (a bar
// in the notebook through the rich-display contract; one text line per update in a plain Node program).
import { display, mimeBundle, type DisplayHandle } from '../runtime/display';
import type { FluxProgress } from './pipeline';

class ProgressView {
  constructor(readonly progress: FluxProgress) {}

  get text(): string {
    const p = this.progress;
    const seconds = `${(p.elapsedMs / 1000).toFixed(1)} s`;
    if (p.stage === 'encode') return `encoding prompt · ${seconds}`;
    if (p.stage === 'decode') return `decoding · ${seconds}`;
    if (p.stage === 'done') return `done: ${p.steps} steps · ${seconds}`;
    return `step ${p.step}/${p.steps} · ${seconds}`;
  }

  [mimeBundle](): Record<string, unknown> {
    const p = this.progress;
    const value = p.stage === 'encode' ? 0 : p.step;
    return {
      'text/html': `<div class="fluxlab-progress"><progress class="fluxlab-progress-bar" max="${p.steps}" value="${value}"></progress> <span class="fluxlab-progress-text">${this.text}</span></div>`,
      'text/plain': this.text,
    };
  }
}

/** A progress callback that shows one display and updates it in place. */
export function displayProgress(): (progress: FluxProgress) => void {
  let handle: DisplayHandle<unknown> | undefined;
  return (progress) => {
    const view = new ProgressView(progress);
    if (handle === undefined) handle = display(view);
    else handle.update(view);
  };
}
