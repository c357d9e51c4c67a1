// The split last round (stream-K) of the persistent sm90 GEMMs (gemm_nf4.cu, the ping-pong kernel of gemm_bf16.cu).
//
// Tiles go round robin over the CTAs, so when their count is not a multiple of the SM count the last round runs on a
// few SMs while the others idle (NF4 M=4608, N=12288: 1728 tiles = 13.09 rounds of 132, the 14th 9% busy; bf16
// 1536 x 3072 in 128 x 128 tiles: 288 tiles = 2.18 rounds; M=512: under one round). Those leftover tiles' k-blocks are
// cut into equal ranges, one per CTA, taken after the whole tiles; a range may end in one tile and start the next, so
// a CTA has at most two pieces. A CTA whose piece does not hold the tile's k-block 0 (a "later piece") stores its
// float32 sums in its own workspace slot and counts itself in; the CTA holding k-block 0 (its "first piece", the last
// thing that CTA does) waits for the count, adds the other pieces in K order and runs the epilogue. Its peers took
// their pieces first, when it took its own, so the wait is about one piece's store. The pieces depend only on the
// shape and the SM count, and their sums are added in one order: the same inputs give the same bits.
//
// Workspace: the counters (one per split tile and accumulator half), then one slot per piece, slot (cta + tile).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <vector>

namespace fluxk {
namespace sm90 {

// Pieces shorter than this many k-blocks would spend more on their pipeline fill and their slot's store and load than
// the idle SMs give back; a tile is cut into at most kMaxPieces, since its first piece's CTA adds the others alone.
constexpr int kMinPieceBlocks = 8;
constexpr int kMaxPieces = 8;

// Which units are whole and how the split ones are cut (a unit: one tile, or CL tiles of a cluster, never split).
struct SplitSchedule {
  int k_blocks = 0;
  int dp_units = 0;  // units [0, dp_units) are whole, round robin over the CTAs
  int sk_tiles = 0;  // units dp_units + j, j < sk_tiles, are split
  int sk_ctas = 0;   // over this many CTAs
};

struct SplitPlan {
  SplitSchedule s;
  int grid = 0;
  size_t counter_bytes = 0, bytes = 0;  // workspace: the counters, then the slots
};

// Distinct row and column blocks among units [first, first + count), coords(unit, &row, &col) placing each.
template <class Coords>
void distinct_blocks(int first, int count, int row_blocks, int col_blocks, Coords coords, int* rows, int* cols) {
  std::vector<char> row_seen(row_blocks, 0), col_seen(col_blocks, 0);
  *rows = *cols = 0;
  for (int u = first; u < first + count; ++u) {
    int r = 0, c = 0;
    coords(u, &r, &c);
    if (!row_seen[r]) row_seen[r] = 1, ++*rows;
    if (!col_seen[c]) col_seen[c] = 1, ++*cols;
  }
}

// halves: accumulator parts stored and counted separately (the NF4 kernel's two consumer warpgroups share a tile).
// max_leftover: the most tiles a last round may hold and still be split; the pieces' fills, stores and fixups cost
// about what a fuller last round loses (the callers cite their measurements).
// footprint(first, count): the bytes of A and W that units [first, first + count) read. Whole tiles sharing a W (or
// A) block run through K in step, so L2 serves the block once; split pieces start at staggered k-blocks, so the
// split tiles' blocks must stay in L2 together or they stream from DRAM once per tile (H100, 2026-11-26: bf16
// 512x3072x12288, 75 MB of W over 96 split tiles, 0.088 -> 0.138 ms; bench/kernels/results/*-f528336.txt).
template <class Footprint>
SplitPlan plan_split(int units, int k_blocks, int sms, size_t tile_bytes, int halves, bool allowed, int max_leftover,
                     size_t l2_bytes, Footprint footprint) {
  SplitPlan p;
  p.s.k_blocks = k_blocks;
  p.s.dp_units = units;
  p.grid = std::min(units, sms);
  const int leftover = units % sms;
  if (!allowed || leftover == 0 || leftover > max_leftover) return p;
  if (footprint(units - leftover, leftover) > l2_bytes) return p;
  const int64_t iters = static_cast<int64_t>(leftover) * k_blocks;
  const int64_t ctas = std::min<int64_t>({sms, static_cast<int64_t>(leftover) * kMaxPieces, iters / kMinPieceBlocks});
  if (ctas <= leftover) return p;
  p.s.dp_units = units - leftover;
  p.s.sk_tiles = leftover;
  p.s.sk_ctas = static_cast<int>(ctas);
  p.grid = p.s.dp_units > 0 ? sms : p.s.sk_ctas;
  p.counter_bytes = (sizeof(uint32_t) * halves * leftover + 255) / 256 * 256;
  p.bytes = p.counter_bytes + static_cast<size_t>(p.s.sk_ctas + p.s.sk_tiles - 1) * tile_bytes;
  return p;
}

// Rounds of whole-tile time the plan takes (its split pieces plus a tenth of a tile for their store and fixup), to
// compare tile shapes.
inline double split_rounds(const SplitPlan& p, int units, int sms) {
  if (!p.s.sk_tiles) return static_cast<double>((units + sms - 1) / sms);
  const int64_t iters = static_cast<int64_t>(p.s.sk_tiles) * p.s.k_blocks;
  return static_cast<double>(p.s.dp_units) / sms +
         static_cast<double>((iters + p.s.sk_ctas - 1) / p.s.sk_ctas) / p.s.k_blocks + 0.1;
}

enum PieceRole : int { kWholeTile = 0, kFirstPiece = 1, kLaterPiece = 2 };

struct Piece {
  int unit, kb0, kb1, role, split_tile;
  int ring_start;  // k-blocks of the CTA's earlier pieces: where this one's stages start in the ring
};

// Start of CTA `cta`'s range of the split tiles' k-block iterations (sk_tiles < SMs, so the count fits an int).
__host__ __device__ __forceinline__ int split_begin(const SplitSchedule& s, int cta) {
  const int total = s.sk_tiles * s.k_blocks;
  return cta >= s.sk_ctas ? total : static_cast<int>(static_cast<int64_t>(total) * cta / s.sk_ctas);
}

__device__ __forceinline__ int whole_units_of(const SplitSchedule& s, int cta, int ctas) {
  return cta < s.dp_units ? (s.dp_units - cta + ctas - 1) / ctas : 0;
}

// The number of pieces CTA `cta` of `ctas` takes: its whole units, then one or two pieces of the split tiles.
__device__ __forceinline__ int pieces_of(const SplitSchedule& s, int cta, int ctas) {
  const int begin = split_begin(s, cta), end = split_begin(s, cta + 1);
  if (begin == end) return whole_units_of(s, cta, ctas);
  const int first_tile = begin / s.k_blocks, last_tile = (end - 1) / s.k_blocks;
  return whole_units_of(s, cta, ctas) + 1 + (last_tile > first_tile);
}

__device__ __forceinline__ Piece piece_of(const SplitSchedule& s, int cta, int ctas, int i) {
  const int whole = whole_units_of(s, cta, ctas);
  if (i < whole) return {cta + i * ctas, 0, s.k_blocks, kWholeTile, 0, i * s.k_blocks};
  const int begin = split_begin(s, cta), end = split_begin(s, cta + 1);
  const int first_tile = begin / s.k_blocks;
  const int first_kb0 = begin - first_tile * s.k_blocks;
  const int first_len = min(s.k_blocks - first_kb0, end - begin);
  const bool second = i > whole;
  const int j = first_tile + second;
  const int kb0 = second ? 0 : first_kb0;
  const int kb1 = second ? end - begin - first_len : first_kb0 + first_len;
  const int role = kb0 > 0 ? kLaterPiece : (kb1 == s.k_blocks ? kWholeTile : kFirstPiece);
  return {s.dp_units + j, kb0, kb1, role, j, whole * s.k_blocks + (second ? first_len : 0)};
}

// The later pieces of split tile j whose first piece CTA `cta` holds: CTAs cta + 1 .. cta + count, slot (CTA + j).
__device__ __forceinline__ int later_pieces(const SplitSchedule& s, int cta, int j) {
  const int tile_end = (j + 1) * s.k_blocks;
  int count = 0;
  while (split_begin(s, cta + 1 + count) < tile_end) ++count;
  return count;
}

#if defined(__CUDA_ARCH__)
__device__ __forceinline__ void red_release_add(uint32_t* counter, uint32_t v) {
  asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(counter), "r"(v) : "memory");
}
__device__ __forceinline__ void wait_count(const uint32_t* counter, uint32_t count) {
  uint32_t v;
  do {
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(counter) : "memory");
    if (v >= count) break;
    __nanosleep(64);
  } while (true);
}
#endif

}  // namespace sm90
}  // namespace fluxk
