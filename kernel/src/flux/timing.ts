// Stage and step timing that is honest on both backends: host clock on the CPU (ops are synchronous there),
// CUDA timing events on the GPU (ops are queued; the host clock would only measure launches). Progress waits
// for the previous mark's event, so the host runs at most one step ahead of the device and progress reports
// track the GPU without draining its queue.
import { cuda, type Device } from '@fluxlab/native';

interface Mark {
  hostMs: number;
  event?: InstanceType<typeof cuda.Event>;
}

export class DeviceClock {
  private readonly marks: Mark[] = [];
  readonly onDevice: boolean;

  constructor(readonly device: Device) {
    this.onDevice = device !== 'cpu';
  }

  /** Marks "now" on the device's stream; returns the mark's index. */
  mark(): number {
    const mark: Mark = { hostMs: performance.now() };
    if (this.onDevice) mark.event = new cuda.Event({ timing: true }).record();
    this.marks.push(mark);
    return this.marks.length - 1;
  }

  /** Blocks until the device reached mark `index` (no-op on the CPU). */
  waitFor(index: number): void {
    this.marks[index]?.event?.synchronize();
  }

  /** Milliseconds between two marks (device time on CUDA: waits for the later one). */
  elapsedMs(from: number, to: number): number {
    const a = this.marks[from];
    const b = this.marks[to];
    if (a.event && b.event) {
      b.event.synchronize();
      return a.event.elapsedMs(b.event);
    }
    return b.hostMs - a.hostMs;
  }

  dispose(): void {
    for (const mark of this.marks) mark.event?.dispose();
    this.marks.length = 0;
  }
}
