/* storage/codec_int.h - what the block codec's files (codec.c: streams, blocks, span values,
 * WAL records; codec_rollup.c: rollup blocks) share beyond storage_int.h. */
#ifndef IOCD_STORAGE_CODEC_INT_H
#define IOCD_STORAGE_CODEC_INT_H

#include "storage/storage_int.h"

#define CODEC_BLOCK_V1 1 /* the first block version: interleaved streams, six-stream rollups */

/* The exponent for a chunk: the largest of its values' smallest exponents. */
int codec_choose_e(const iocd_sample *s, size_t n);
/* Decodes a whole stream (split: the current layout, else version 1's) into *buf, grown as
 * needed (*cap samples). */
iocd_err codec_stream_decode_v(const uint8_t *p, size_t len, bool split, iocd_sample **buf,
                               size_t *cap, size_t *n_out);
/* One series' payload of a block, and a block of such payloads under a version byte. */
typedef iocd_err (*codec_payload_fn)(const codec_series *cs, int64_t arg, iocd_buf *out);
iocd_err codec_block_encode_v(const codec_series *list, size_t n, int level, uint8_t version,
                              codec_payload_fn payload, int64_t arg, iocd_buf *out);
/* Calls fn for each series' payload of a block whose version is one of the versions bits;
 * *version is set once the block is open. */
typedef iocd_err (*codec_stream_fn)(void *ud, uint64_t id, const uint8_t *p, size_t len);
iocd_err codec_block_walk_v(const void *data, size_t len, size_t max_raw, unsigned versions,
                            int *version, codec_stream_fn fn, void *ud);

#endif
