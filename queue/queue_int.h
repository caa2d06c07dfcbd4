/*
 * queue_int.h - what the files of queue/ share (queue__ prefix): the byte
 * layout of a queue file, little-endian helpers and the OOM policy.  Nothing
 * outside queue/ includes this.
 */
#ifndef SIGNET_QUEUE_INT_H
#define SIGNET_QUEUE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "queue/queue.h"

/* "SIGNETQ" '\0' then u32 version: 12 bytes before the first record. */
#define QUEUE__MAGIC      "SIGNETQ"
#define QUEUE__MAGIC_LEN  8
#define QUEUE__HDR_LEN    (QUEUE__MAGIC_LEN + 4)
#define QUEUE__REC_HDR    5            /* u8 type, u32 length */
#define QUEUE__SHA_LEN    32

/*
 * Envelope and signature records are read whole; anything larger than this
 * is not a file we wrote (10,000 recipients of 300 bytes each is 3 MB).
 */
#define QUEUE__MAX_META   (16u << 20)

/* queue__put_le32 - store v little-endian at p. */
static inline void
queue__put_le32(unsigned char *p, uint32_t v)
{
	p[0] = v & 0xff;
	p[1] = (v >> 8) & 0xff;
	p[2] = (v >> 16) & 0xff;
	p[3] = (v >> 24) & 0xff;
}

/* queue__get_le32 - load a little-endian u32 from p. */
static inline uint32_t
queue__get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 24;
}

/* queue__put_le64 / queue__get_le64 - the same for 64 bits ('R' times). */
static inline void
queue__put_le64(unsigned char *p, uint64_t v)
{
	queue__put_le32(p, (uint32_t)v);
	queue__put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t
queue__get_le64(const unsigned char *p)
{
	return (uint64_t)queue__get_le32(p) |
	    (uint64_t)queue__get_le32(p + 4) << 32;
}

/*
 * 'R' record body: u32 rcpt, u8 state, i64 when, i64 next, u32 attempts
 * (25 bytes), the reason, then 8 bytes of SHA-256 over the 5-byte header
 * and everything before them.  The length field counts all of it.
 */
#define QUEUE__R_FIXED    25
#define QUEUE__R_SUM      8
#define QUEUE__R_REASON_MAX 2000       /* longer reasons are cut */

/*
 * queue__xmalloc / queue__xstrdup - allocate or abort: the streaming write
 * path promises not to fail on anything but I/O (queue.h).
 */
void *queue__xmalloc(size_t n);
char *queue__xstrdup(const char *s);

/* queue__logf - format a message and hand it to a queue_config-style hook. */
void queue__logf(void (*log)(void *, int, const char *), void *arg, int prio,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
