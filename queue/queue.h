/*
 * queue.h - Signet's durable spool.
 *
 * One queue file per message under <spool_dir>/: written in <spool_dir>/tmp
 * while the message streams in, then made durable and moved to
 * <spool_dir>/active by a group commit: the fsyncs of every message that
 * finished in the same short window are submitted together through one
 * io_uring ring per event loop, the renames follow, and one fsync of the
 * directory covers them all.  Only then does the commit callback run, and
 * only then may the SMTP side say 250.
 *
 * Queue file format (version 1), all integers little-endian:
 *   "SIGNETQ" '\0' u32 version              file magic
 *   records: u8 type, u32 length, payload
 *     'E' envelope (text, "key value\n" lines; see queue_envelope)
 *     'M' message bytes (CRLF, unstuffed), any number, in order
 *     'S' DKIM-Signature field(s) to put before the message when sending
 *     'X' end: 32-byte SHA-256 of every byte of the file before this record
 * A file without a valid 'X' record at its very end is incomplete and is
 * never delivered.  Recovery (queue_recover) removes tmp/ files and checks
 * every active/ file.
 *
 * The module knows nothing of SMTP or of DKIM: the signature is opaque text.
 * It uses libuv only to bring io_uring completions back onto the loop.
 */
#ifndef SIGNET_QUEUE_H
#define SIGNET_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#define QUEUE_VERSION 1
#define QUEUE_ID_LEN 18         /* hex: 10 seconds, 5 microseconds, 3 counter */

#define QUEUE_REC_ENVELOPE 'E'
#define QUEUE_REC_MESSAGE  'M'
#define QUEUE_REC_SIGNATURE 'S'
#define QUEUE_REC_END      'X'

/* DSN parameters (RFC 3461) */
#define QUEUE_NOTIFY_NEVER   0x01
#define QUEUE_NOTIFY_SUCCESS 0x02
#define QUEUE_NOTIFY_FAILURE 0x04
#define QUEUE_NOTIFY_DELAY   0x08

enum queue_ret { QUEUE_RET_UNSET, QUEUE_RET_FULL, QUEUE_RET_HDRS };

struct queue_rcpt {
	char *addr;        /* without angle brackets */
	int notify;        /* QUEUE_NOTIFY_* bits, 0 if not given */
	char *orcpt;       /* ORCPT=, xtext-decoded, or NULL */
};

struct queue_envelope {
	char *mail_from;   /* "" for the null reverse-path */
	char *envid;       /* ENVID= or NULL */
	enum queue_ret ret;
	int body_8bit;     /* BODY=8BITMIME */
	int smtputf8;      /* SMTPUTF8 */
	size_t nrcpt;
	struct queue_rcpt *rcpt;
	char *helo;        /* client's EHLO/HELO name */
	char *client_addr; /* "ip" or "[ipv6]" as seen after PROXY */
	char *auth_user;   /* or NULL */
	time_t arrival;
};

/*
 * queue_envelope_free - free the strings and the recipient array (not the
 * struct itself, which the caller owns).  NULL fields are fine.
 */
void queue_envelope_free(struct queue_envelope *env);
/*
 * queue_envelope_encode / _decode - the 'E' record payload.  encode returns
 * a malloc'd buffer (NULL on OOM); decode fills env (caller frees with
 * queue_envelope_free) and returns 0 or -EINVAL.
 */
char *queue_envelope_encode(const struct queue_envelope *env, size_t *len);
int queue_envelope_decode(const char *p, size_t len, struct queue_envelope *env);

/* queue_id_new - a new id, unique on this node, NUL-terminated in buf[QUEUE_ID_LEN + 1]. */
void queue_id_new(char *buf);
/* queue_id_time - when the id was made (seconds), or -1 if it is not an id. */
time_t queue_id_time(const char *id);

/* Events the daemon turns into metrics (queue knows nothing of Prometheus). */
enum queue_event {
	QUEUE_EV_FSYNC_BATCH,     /* value: messages covered by one group commit */
	QUEUE_EV_FSYNC_SECONDS,   /* value: seconds the group commit took */
	QUEUE_EV_COMMITTED,       /* value: 1 per message made durable */
	QUEUE_EV_WRITE_ERROR,     /* value: 1 */
};

struct queue_config {
	const char *spool_dir;
	unsigned commit_window_us;  /* wait at most this long to gather a batch (default 1000) */
	unsigned max_batch;         /* commit at once when this many wait (default 256) */
	void (*event)(void *arg, enum queue_event ev, double value);
	void (*log)(void *arg, int prio, const char *msg);  /* syslog priority */
	void *arg;
};

/* One spool handle per event loop (it owns that loop's io_uring ring). */
struct queue_spool;

/*
 * queue_spool_new - create <spool_dir>/tmp and <spool_dir>/active if needed
 * and a ring whose completions arrive on loop.  Returns 0 or -errno.
 */
int queue_spool_new(uv_loop_t *loop, const struct queue_config *cfg,
    struct queue_spool **out);
/*
 * queue_spool_close - stop; messages still open are aborted (their tmp files
 * removed), commits in flight complete first.  cb runs when the handles are
 * closed; then the spool is freed.
 */
void queue_spool_close(struct queue_spool *sp, void (*cb)(void *arg), void *arg);

/*
 * queue_recover - on start, before any spool is open: remove everything in
 * tmp/, check every file in active/ (queue_file_check) and move bad ones to
 * <spool_dir>/corrupt.  Returns the number of good messages, or -errno.
 */
int queue_recover(const char *spool_dir, void (*log)(void *arg, int prio,
    const char *msg), void *arg);

/*
 * queue_file_check - validate one queue file: magic, version, record
 * framing, a final 'X' record whose SHA-256 matches.  0 or -EINVAL / -errno.
 */
int queue_file_check(const char *path);

struct queue_msg;

/*
 * queue_msg_new - start a message: a new id, a file in tmp/, the envelope
 * record queued for writing.  The envelope is copied.  0 or -errno.
 */
int queue_msg_new(struct queue_spool *sp, const struct queue_envelope *env,
    struct queue_msg **out);
/* queue_msg_id - the message's id (NUL-terminated, valid until free). */
const char *queue_msg_id(const struct queue_msg *m);
/*
 * queue_msg_write - append message bytes.  Data is copied into large blocks
 * written asynchronously; memory per message stays bounded by the blocks in
 * flight.  An I/O error is sticky and reported by the commit.  Can't fail
 * otherwise (aborts on OOM).
 */
void queue_msg_write(struct queue_msg *m, const char *p, size_t len);
/* queue_msg_pending - bytes buffered or in flight (for read back-pressure). */
size_t queue_msg_pending(const struct queue_msg *m);

/*
 * queue_msg_commit - append the signature record (sig may be NULL/0 for an
 * unsigned message) and the end record, then make the file durable with the
 * next group commit.  cb(arg, status, id) runs once, on the loop: status 0
 * means the file and its directory entry are on disk; a negative errno means
 * nothing will be delivered (the file is gone).  The message is freed after
 * cb returns.  Takes ownership of m in all cases.
 */
typedef void (*queue_commit_cb)(void *arg, int status, const char *id);
void queue_msg_commit(struct queue_msg *m, const char *sig, size_t siglen,
    queue_commit_cb cb, void *arg);
/* queue_msg_abort - drop an unfinished message and its tmp file.  NULL ok. */
void queue_msg_abort(struct queue_msg *m);

/*
 * Reading a committed file (for delivery, `signetctl queue show` and tests):
 * queue_file_read loads the envelope and the signature and reports where the
 * message bytes are; 0 or -errno / -EINVAL.
 */
struct queue_file {
	struct queue_envelope env;
	char *sig;              /* malloc'd, may be NULL */
	size_t siglen;
	uint64_t msg_size;      /* total message bytes in 'M' records */
};
int queue_file_read(const char *path, struct queue_file *qf);
/*
 * queue_file_message - call fn for each message chunk of the file in order
 * (the signature not included).  0, -errno, or fn's non-zero return.
 */
int queue_file_message(const char *path,
    int (*fn)(void *arg, const char *p, size_t len), void *arg);
void queue_file_free(struct queue_file *qf);

#endif
