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
	/* queue manager (issue 4) */
	QUEUE_EV_RCPT_SENT,       /* value: recipients of one job now SENT */
	QUEUE_EV_RCPT_DEFERRED,   /* value: recipients of one job deferred */
	QUEUE_EV_RCPT_BOUNCED,    /* value: recipients of one job bounced (expiry too) */
	QUEUE_EV_MSG_DONE,        /* value: seconds from arrival to removal */
	QUEUE_EV_MARK_ERROR,      /* value: 1, delivery state not recorded */
	QUEUE_EV_MSG_DELETED,     /* value: 1 per message removed by queue_sched_delete */
};

struct queue_config {
	const char *spool_dir;
	unsigned commit_window_us;  /* wait at most this long to gather a batch (default 1000) */
	unsigned max_batch;         /* commit at once when this many wait (default 256) */
	void (*event)(void *arg, enum queue_event ev, double value);
	void (*log)(void *arg, int prio, const char *msg);  /* syslog priority */
	/* committed: a message is durable (on the spool's loop; NULL: none) */
	void (*committed)(void *arg, const char *id);
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

/* ---- delivery state (issue 4) --------------------------------------------
 *
 * What happened to each recipient is appended to the queue file after its
 * 'X' record, one 'R' record per recipient and attempt:
 *   'R' payload: u32 recipient index, u8 state, i64 time, i64 next attempt,
 *       u32 attempts so far, reason text; then the first 8 bytes of the
 *       SHA-256 of type, length and payload (the length counts these 8
 *       bytes too; the digest covers everything before them).
 * The part up to 'X' never changes.  A torn last 'R' record (a crash in the
 * middle of an append) is ignored, so at worst the transaction that was in
 * flight is tried again.  queue_file_check accepts trailing 'R' records.
 */
#define QUEUE_REC_RCPT_STATE 'R'

enum queue_rcpt_state {
	QUEUE_RCPT_PENDING,     /* not tried, or deferred (see next_try) */
	QUEUE_RCPT_SENT,        /* done: accepted by the next hop */
	QUEUE_RCPT_BOUNCED,     /* done: failed for good, DSN queued if wanted */
};

struct queue_rcpt_status {
	enum queue_rcpt_state state;
	time_t last_try;        /* 0: never tried */
	time_t next_try;        /* for PENDING: not before this time */
	unsigned attempts;
	char *reason;           /* last reply or error text, malloc'd or NULL */
};

struct queue_mark {
	size_t rcpt;            /* index into env.rcpt */
	enum queue_rcpt_state state;
	time_t when, next_try;
	unsigned attempts;
	const char *reason;
};

/*
 * queue_file_mark - append one 'R' record per mark and fdatasync the file
 * before returning (a recipient marked SENT is never sent again after a
 * restart).  Blocking: call it off the event loops (thread pool).
 * 0 or -errno.
 */
int queue_file_mark(const char *path, const struct queue_mark *marks, size_t n);
/*
 * queue_file_status - the current state of every recipient (the last valid
 * 'R' record for each), in a malloc'd array of env.nrcpt entries, in order.
 * 0 or -errno / -EINVAL.  Free with queue_status_free.
 */
int queue_file_status(const char *path, size_t nrcpt,
    struct queue_rcpt_status **out);
void queue_status_free(struct queue_rcpt_status *st, size_t n);

/* ---- queue manager (issue 4) ---------------------------------------------
 *
 * One queue manager runs on the daemon's main loop.  It knows every message
 * in active/ (read at start, then told of each new commit through
 * queue_sched_notify, which any thread may call), groups each message's
 * pending recipients by destination (the recipient's domain, lower case),
 * and hands the daemon one job per message and destination when it is due,
 * within the concurrency limits.  The daemon (relay/) delivers the job
 * (resolution, SMTP client) and reports per-recipient outcomes with
 * queue_job_done.  The manager records them in the file (queue_file_mark,
 * on the thread pool), schedules deferred recipients with exponential
 * backoff, asks the daemon for a bounce when recipients failed for good,
 * and removes the file when every recipient is done.  Messages on hold live
 * in <spool_dir>/hold and are not scheduled.
 */
struct queue_sched;

struct queue_job {
	const char *id;               /* queue id */
	const char *path;             /* active/<id> */
	const struct queue_envelope *env;
	const char *domain;           /* destination: recipients' domain */
	size_t nrcpt;
	const size_t *rcpt;           /* indices into env->rcpt */
	unsigned attempt;             /* 1 for the first try of these recipients */
	uint64_t size;                /* message bytes, signature record included */
};

enum queue_outcome { QUEUE_OUT_SENT, QUEUE_OUT_DEFERRED, QUEUE_OUT_BOUNCED };

struct queue_result {
	enum queue_outcome outcome;
	const char *reason;           /* the reply or error, for logs, DSNs and show */
};

/* A recipient that failed for good, as the daemon needs it for a DSN. */
struct queue_failed {
	size_t rcpt;                  /* index into env->rcpt */
	const char *reason;
	int expired;                  /* failed by maximal_queue_lifetime */
};

struct queue_sched_config {
	const char *spool_dir;
	unsigned minimal_backoff_time;    /* seconds (Postfix default 300) */
	unsigned maximal_backoff_time;    /* 4000 */
	unsigned maximal_queue_lifetime;  /* 5 days */
	unsigned bounce_queue_lifetime;   /* 5 days, for null-sender mail */
	unsigned destination_concurrency; /* jobs in flight per destination (20) */
	unsigned max_jobs;                /* jobs in flight in all (100) */
	/*
	 * defer_all (Postfix defer_transports = smtp): start jobs only after
	 * queue_sched_flush, until what was due then has been started.
	 */
	int defer_all;
	/*
	 * deliver: start a job; queue_job_done(sched, job, results) must follow
	 * exactly once, on the loop, with one result per job->rcpt entry.  The
	 * job and what it points to stay valid until then.
	 */
	void (*deliver)(void *arg, struct queue_sched *sched, const struct queue_job *job);
	/*
	 * bounce: recipients of this message failed for good and their NOTIFY
	 * asks for a DSN (the sender is not null).  The daemon composes the
	 * RFC 3464 report and queues it as a new message.  The pointers are
	 * valid during the call only.
	 */
	void (*bounce)(void *arg, const char *id, const char *path,
	    const struct queue_envelope *env, const struct queue_failed *failed,
	    size_t nfailed);
	void (*event)(void *arg, enum queue_event ev, double value);
	void (*log)(void *arg, int prio, const char *msg);
	void *arg;
};

/*
 * queue_sched_new - read active/ (every file: envelope and recipient
 * status), then schedule.  0 or -errno.
 */
int queue_sched_new(uv_loop_t *loop, const struct queue_sched_config *cfg,
    struct queue_sched **out);
/* queue_sched_notify - a new message was committed (thread-safe). */
void queue_sched_notify(struct queue_sched *qs, const char *id);
/* queue_job_done - the outcome of a job, one result per recipient. */
void queue_job_done(struct queue_sched *qs, const struct queue_job *job,
    const struct queue_result *results);
/*
 * queue_sched_stop - start no new job; cb runs once the jobs in flight are
 * done and the handles are closed; then the manager is freed.
 */
void queue_sched_stop(struct queue_sched *qs, void (*cb)(void *arg), void *arg);

/* Administration (signetctl queue ...), on the loop. */
struct queue_info {
	char id[QUEUE_ID_LEN + 1];
	time_t arrival;
	uint64_t size;
	const char *sender;
	size_t nrcpt, npending;
	time_t next_try;              /* earliest pending recipient */
	int held;
};
/* queue_sched_list - call fn for every message (active and held). */
void queue_sched_list(struct queue_sched *qs,
    void (*fn)(void *arg, const struct queue_info *info), void *arg);
/* queue_sched_flush - make id (NULL: every message) due now.  0 or -ENOENT. */
int queue_sched_flush(struct queue_sched *qs, const char *id);
/* queue_sched_hold / _release - move between active/ and hold/.  0 or -ENOENT/-EBUSY. */
int queue_sched_hold(struct queue_sched *qs, const char *id);
int queue_sched_release(struct queue_sched *qs, const char *id);
/* queue_sched_delete - remove the message without a bounce.  0 or -ENOENT/-EBUSY. */
int queue_sched_delete(struct queue_sched *qs, const char *id);
/* queue_sched_counts - active (due or deferred), deferred, held, oldest arrival. */
void queue_sched_counts(const struct queue_sched *qs, size_t *active,
    size_t *deferred, size_t *held, time_t *oldest);


/* ---- resumable message reader (issue 4) -----------------------------------
 *
 * For the delivery client, which must never hold a thread-pool thread while
 * the network is slow: the message bytes come out a piece at a time, each
 * call doing a bounded amount of blocking file I/O and returning, so that a
 * caller can run one call per uv_queue_work and decide between calls
 * whether it wants more.  A reader belongs to one thread at a time (any
 * thread; it has no lock).
 */
struct queue_reader;

/*
 * queue_reader_open - open path for reading its message.  No framing is
 * checked yet (that happens as the bytes are read).  0, or -errno / -ENOMEM.
 */
int queue_reader_open(const char *path, struct queue_reader **out);
/*
 * queue_reader_read - the next message bytes (the payloads of the 'M'
 * records, in order; not the envelope or the signature) into buf[0..cap):
 * their count (> 0, at most cap), or 0 at the end, once the 'X' record's
 * SHA-256 was found to match every byte before it, or a negative error:
 * -EINVAL for a damaged or truncated file (bad magic, version, framing, or
 * digest), -errno on I/O errors, -ENOMEM.  Bytes already returned before a
 * digest mismatch were not the file's true content: the caller must not
 * finish with them (no final dot).  The end and errors are sticky.  Each
 * call reads at most what the records up to the next message bytes need
 * plus one buffer (64 KiB, or cap when larger); the 'R' records after 'X'
 * are not read.  cap 0: -EINVAL.
 */
long queue_reader_read(struct queue_reader *r, char *buf, size_t cap);
/* queue_reader_close - close the file and free r.  NULL is a no-op. */
void queue_reader_close(struct queue_reader *r);

#endif
