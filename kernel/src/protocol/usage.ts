// usage_reply content for jupyter-resource-usage's usage_request on the control channel, with the fields
// ipykernel sends (hostname, pid, kernel_cpu %, kernel_memory bytes, host_cpu_percent, cpu_count,
// host_virtual_memory in psutil's shape) plus `gpu_memory` (GpuMemoryUsage[]) when a GPU is in use.
import { readFileSync } from 'node:fs';
import { cpus, freemem, hostname, totalmem } from 'node:os';

/** One device as the GPU memory provider reports it (bytes). */
export interface GpuMemoryUsage {
  device: number;
  name?: string;
  total: number;
  free: number;
  /** Bytes this process holds through the caching allocator, when the provider knows them. */
  allocated?: number;
  reserved?: number;
}

/**
 * Reports the GPU memory of the devices this process uses, or [] when there are none. Injected by the CLI,
 * called on the main thread (where the native addon lives); it must not initialise CUDA just to answer.
 */
export type GpuMemoryProvider = () => GpuMemoryUsage[];

interface CpuSample {
  at: number;
  processMicros: number;
  hostBusy: number;
  hostTotal: number;
}

function hostCpuTimes(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const cpu of cpus()) {
    const t = cpu.times;
    busy += t.user + t.nice + t.sys + t.irq;
    total += t.user + t.nice + t.sys + t.irq + t.idle;
  }
  return { busy, total };
}

function meminfo(): Record<string, number> {
  const values: Record<string, number> = {};
  try {
    for (const line of readFileSync('/proc/meminfo', 'utf8').split('\n')) {
      const match = /^(\w+):\s+(\d+) kB/.exec(line);
      if (match !== null) values[match[1]] = Number(match[2]) * 1024;
    }
  } catch {
    // Not Linux: fall back to os.totalmem/freemem below.
  }
  return values;
}

/** psutil.virtual_memory()'s fields (those computable without psutil). */
export function hostVirtualMemory(): Record<string, number> {
  const info = meminfo();
  const total = info.MemTotal ?? totalmem();
  const free = info.MemFree ?? freemem();
  const available = info.MemAvailable ?? freemem();
  const buffers = info.Buffers ?? 0;
  const cached = (info.Cached ?? 0) + (info.SReclaimable ?? 0);
  const used = Math.max(0, total - free - buffers - cached);
  return {
    total,
    available,
    percent: total > 0 ? Math.round(((total - available) / total) * 1000) / 10 : 0,
    used,
    free,
    active: info.Active ?? 0,
    inactive: info.Inactive ?? 0,
    buffers,
    cached,
    shared: info.Shmem ?? 0,
    slab: info.Slab ?? 0,
  };
}

export class UsageReporter {
  private last: CpuSample;

  constructor() {
    this.last = this.sample();
  }

  private sample(): CpuSample {
    const cpu = process.cpuUsage();
    const host = hostCpuTimes();
    return { at: performance.now(), processMicros: cpu.user + cpu.system, hostBusy: host.busy, hostTotal: host.total };
  }

  /** CPU figures are averages since the previous request (the first call: since the reporter was created). */
  content(gpuMemory: GpuMemoryUsage[]): Record<string, unknown> {
    const now = this.sample();
    const elapsedMicros = Math.max(1, (now.at - this.last.at) * 1000);
    const hostTotal = now.hostTotal - this.last.hostTotal;
    const content: Record<string, unknown> = {
      hostname: hostname(),
      pid: process.pid,
      kernel_cpu: Math.round(((now.processMicros - this.last.processMicros) / elapsedMicros) * 1000) / 10,
      kernel_memory: process.memoryUsage.rss(),
      cpu_count: cpus().length,
      host_virtual_memory: hostVirtualMemory(),
    };
    if (hostTotal > 0) content.host_cpu_percent = Math.round(((now.hostBusy - this.last.hostBusy) / hostTotal) * 1000) / 10;
    this.last = now;
    if (gpuMemory.length > 0) content.gpu_memory = gpuMemory;
    return content;
  }
}
