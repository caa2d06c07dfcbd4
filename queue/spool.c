/*
 * spool.c - the write side of the spool: one io_uring ring per libuv loop,
 * messages streamed into tmp/ in 64 KiB blocks, and the group commit that
 * makes them durable in active/.
 *
 * libuv 1.44 has no io_uring of its own, so the spool owns a liburing ring
 * and registers an eventfd with it; a uv_poll_t on that eventfd brings the
 * completions back onto the loop, and a uv_prepare_t submits everything
 * queued during a loop iteration with one io_uring_enter just before the
 * loop blocks.  A message's file is created through the ring too
 * (IORING_OP_OPENAT; a synchronous openat on kernels without it), since
 * creating a directory entry can block for a while.  A message is framed
 * as it streams (queue.h): bytes are copied into a block, the block is
 * hashed into the message's SHA-256 and written at its file offset when it
 * fills (or as soon as the file is open), and freed when the write
 * completes, so memory per message is the blocks in flight.
 *
 * Group commit.  queue_msg_commit appends the 'S' and 'X' records and puts
 * the message on the spool's pending list.  A batch starts when max_batch
 * messages wait or commit_window_us after the first of them (a uv_timer, so
 * millisecond granularity), and only one batch runs at a time: whatever
 * commits while a batch is on disk forms the next one, which is what makes
 * batches grow with load.  A batch goes through four phases, each submitted
 * in one go:
 *	WRITES	wait for the messages' last block writes;
 *	SYNC	one fdatasync per file;
 *	RENAME	renameat tmp/ID -> active/ID for each (rename(2) if the
 *		kernel lacks IORING_OP_RENAMEAT, i.e. before 5.11);
 *	DIR	one fsync of active/, covering every rename.
 * Then each message's callback runs, with 0 only if all of that succeeded
 * (RFC 5321 4.1.1.4: the 250 after DATA means the server has taken
 * responsibility for the message).  A failed message's file is unlinked,
 * from active/ too if the rename happened but the directory fsync failed:
 * a file nobody acknowledged must not be delivered.  (That unlink is itself
 * not made durable; after a crash at that very moment the message may be
 * delivered although the client got 4xx and will retry: a duplicate, never
 * a loss.)
 *
 * Lifetime: file descriptors are closed only after the last operation that
 * names them has completed, because a queued SQE naming a closed and reused
 * fd would write into someone else's file.  So an aborted message lingers
 * until its open and writes complete, and queue_spool_close waits for every
 * message and batch before it closes its handles.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <liburing.h>
#include <openssl/evp.h>

#include "queue/queue_int.h"

#define QUEUE_BLOCK        (64 * 1024)
#define QUEUE_RING_ENTRIES 256        /* at least; more for big batches */
#define QUEUE_RING_MAX     4096
#define QUEUE_FREE_BLOCKS  32          /* blocks kept for reuse per spool */
#define NO_REC             ((size_t)-1)

#define container_of(p, type, field) \
	((type *)(void *)((char *)(p) - offsetof(type, field)))

enum op_kind { OP_OPEN, OP_WRITE, OP_SYNC, OP_RENAME, OP_DIRSYNC };

/* One I/O in flight; its address is the SQE's user_data. */
struct qop {
	enum op_kind kind;
	struct qop *next;         /* on sp->deferred while the SQ is full */
};

struct qblock {
	struct qop op;
	struct queue_msg *msg;
	struct qblock *next;      /* free list, or waiting for the open */
	uint64_t off;             /* file offset of data[0] */
	size_t len;               /* bytes in data */
	size_t hashed;            /* of those, already in the digest */
	size_t done;              /* written so far (short writes resume) */
	unsigned char data[QUEUE_BLOCK];
};

enum msg_state { QM_OPEN, QM_PENDING, QM_BATCH, QM_ABORTED };

struct queue_msg {
	struct queue_spool *sp;
	struct queue_msg *next, *prev;   /* open list, pending list, batch */
	char id[QUEUE_ID_LEN + 1];
	int fd;                   /* -1 until the open completes */
	enum msg_state state;
	int err;                  /* first error, sticky */
	int renamed;              /* active/ID exists */
	unsigned ops;             /* the open and block writes in flight */
	struct qblock *waitq, **waitq_tail;  /* full blocks before the fd */
	uint64_t off;             /* file bytes framed so far */
	size_t pending;           /* bytes buffered or being written */
	struct qblock *cur;       /* block being filled */
	size_t mrec;              /* offset in cur of the open 'M' header */
	int final;                /* digest taken: no more hashing */
	EVP_MD_CTX *md;
	struct qop op;            /* the open, the fsync, then the rename */
	queue_commit_cb cb;
	void *cb_arg;
};

enum batch_phase { PH_NONE, PH_WRITES, PH_SYNC, PH_RENAME, PH_DIR };

struct queue_spool {
	uv_loop_t *loop;
	struct queue_config cfg;
	char *dir;
	int tmp_fd, active_fd, efd;
	struct io_uring ring;
	int ring_ok;
	int have_openat, have_renameat;
	EVP_MD *sha256;

	uv_poll_t poll;
	uv_timer_t timer;
	uv_prepare_t prepare;
	int nhandles;             /* initialized, not yet closed */

	unsigned inflight;        /* ops queued or submitted, not completed */
	struct qop *deferred, **deferred_tail;
	int prepare_on, timer_on, due;
	uint64_t window_ms;       /* commit_window_us, rounded up */

	struct queue_msg *open;   /* QM_OPEN, doubly linked */
	struct queue_msg *pend, **pend_tail;
	size_t npending;
	size_t nmsgs;             /* every live queue_msg, aborted ones too */

	struct queue_msg *batch;  /* the batch on disk, singly linked */
	size_t nbatch, nsynced;
	unsigned batch_wait;      /* writes or ops the phase waits for */
	enum batch_phase phase;
	uint64_t batch_t0;
	struct qop op_dir;

	struct qblock *free_blocks;
	unsigned nfree;

	int closing, closed;
	void (*close_cb)(void *);
	void *close_arg;
};

static void spool_commit_check(struct queue_spool *sp);
static void spool_close_check(struct queue_spool *sp);
static void batch_sync(struct queue_spool *sp);
static void batch_rename(struct queue_spool *sp);
static void batch_dir(struct queue_spool *sp);
static void spool_timer_cb(uv_timer_t *h);

/* spool_event - report to the metrics hook, if any. */
static void
spool_event(struct queue_spool *sp, enum queue_event ev, double v)
{
	if (sp->cfg.event != NULL)
		sp->cfg.event(sp->cfg.arg, ev, v);
}

/* ---- submission ---------------------------------------------------------- */

/* op_prep - fill an SQE for op. */
static void
op_prep(struct queue_spool *sp, struct qop *op, struct io_uring_sqe *sqe)
{
	struct queue_msg *m;
	struct qblock *b;

	switch (op->kind) {
	case OP_OPEN:
		m = container_of(op, struct queue_msg, op);
		io_uring_prep_openat(sqe, sp->tmp_fd, m->id, O_WRONLY |
		    O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		break;
	case OP_WRITE:
		b = container_of(op, struct qblock, op);
		io_uring_prep_write(sqe, b->msg->fd, b->data + b->done,
		    (unsigned)(b->len - b->done), b->off + b->done);
		break;
	case OP_SYNC:
		m = container_of(op, struct queue_msg, op);
		io_uring_prep_fsync(sqe, m->fd, IORING_FSYNC_DATASYNC);
		break;
	case OP_RENAME:
		m = container_of(op, struct queue_msg, op);
		io_uring_prep_renameat(sqe, sp->tmp_fd, m->id, sp->active_fd,
		    m->id, 0);
		break;
	case OP_DIRSYNC:
		io_uring_prep_fsync(sqe, sp->active_fd, 0);
		break;
	}
	io_uring_sqe_set_data(sqe, op);
}

/* spool_sqe - a free SQE, submitting what is queued if the SQ is full. */
static struct io_uring_sqe *
spool_sqe(struct queue_spool *sp)
{
	struct io_uring_sqe *sqe;

	if ((sqe = io_uring_get_sqe(&sp->ring)) == NULL &&
	    io_uring_submit(&sp->ring) >= 0)
		sqe = io_uring_get_sqe(&sp->ring);
	return sqe;
}

/* spool_prepare_cb - once per loop iteration: submit what was queued. */
static void
spool_prepare_cb(uv_prepare_t *h)
{
	struct queue_spool *sp = h->data;
	struct io_uring_sqe *sqe;
	struct qop *op;
	int rc;

	while ((op = sp->deferred) != NULL &&
	    (sqe = spool_sqe(sp)) != NULL) {
		if ((sp->deferred = op->next) == NULL)
			sp->deferred_tail = &sp->deferred;
		op_prep(sp, op, sqe);
	}
	rc = io_uring_submit(&sp->ring);
	if (rc < 0 && rc != -EAGAIN && rc != -EBUSY && rc != -EINTR)
		queue__logf(sp->cfg.log, sp->cfg.arg, LOG_ERR,
		    "queue: io_uring_submit: %s", strerror(-rc));
	/*
	 * On failure the SQEs stay queued and we try again next iteration:
	 * -EBUSY means completions wait to be reaped, which wakes the loop.
	 */
	if (rc >= 0 && sp->deferred == NULL &&
	    io_uring_sq_ready(&sp->ring) == 0) {
		sp->prepare_on = 0;
		uv_prepare_stop(&sp->prepare);
	}
}

/*
 * op_queue - queue op for the next submission.  When the SQ is full and
 * the kernel will not take more right now, op waits on the deferred list
 * (FIFO) and the prepare handle retries.
 */
static void
op_queue(struct queue_spool *sp, struct qop *op)
{
	struct io_uring_sqe *sqe;

	if (sp->inflight++ == 0)
		uv_ref((uv_handle_t *)&sp->poll);
	if (sp->deferred == NULL && (sqe = spool_sqe(sp)) != NULL) {
		op_prep(sp, op, sqe);
	} else {
		op->next = NULL;
		*sp->deferred_tail = op;
		sp->deferred_tail = &op->next;
	}
	if (!sp->prepare_on) {
		sp->prepare_on = 1;
		uv_prepare_start(&sp->prepare, spool_prepare_cb);
	}
}

/* ---- blocks and framing -------------------------------------------------- */

/* block_get - an empty block for m, reused if possible. */
static struct qblock *
block_get(struct queue_msg *m)
{
	struct queue_spool *sp = m->sp;
	struct qblock *b;

	if ((b = sp->free_blocks) != NULL) {
		sp->free_blocks = b->next;
		sp->nfree--;
	} else {
		b = queue__xmalloc(sizeof(*b));
	}
	b->op.kind = OP_WRITE;
	b->msg = m;
	b->next = NULL;
	b->off = m->off;
	b->len = b->hashed = b->done = 0;
	return b;
}

/* block_put - keep a few blocks for the next messages, free the rest. */
static void
block_put(struct queue_spool *sp, struct qblock *b)
{
	if (sp->nfree < QUEUE_FREE_BLOCKS && !sp->closing) {
		b->next = sp->free_blocks;
		sp->free_blocks = b;
		sp->nfree++;
	} else {
		free(b);
	}
}

/* msg_set_err - remember the first error; I/O errors count for metrics. */
static void
msg_set_err(struct queue_msg *m, int err, const char *what)
{
	if (m->err != 0)
		return;
	m->err = err;
	queue__logf(m->sp->cfg.log, m->sp->cfg.arg, LOG_ERR,
	    "queue: %s: %s: %s", m->id, what, strerror(-err));
	spool_event(m->sp, QUEUE_EV_WRITE_ERROR, 1);
}

/* msg_close_rec - fix the length of the open 'M' record, if any. */
static void
msg_close_rec(struct queue_msg *m)
{
	struct qblock *b = m->cur;

	if (m->mrec == NO_REC)
		return;
	b->data[m->mrec] = QUEUE_REC_MESSAGE;
	queue__put_le32(b->data + m->mrec + 1,
	    (uint32_t)(b->len - m->mrec - QUEUE__REC_HDR));
	m->mrec = NO_REC;
}

/* msg_hash - add the unhashed tail of the current block to the digest. */
static void
msg_hash(struct queue_msg *m)
{
	struct qblock *b = m->cur;

	if (b == NULL || m->final || b->hashed == b->len)
		return;
	if (!EVP_DigestUpdate(m->md, b->data + b->hashed, b->len - b->hashed))
		msg_set_err(m, -ENOMEM, "sha256");
	b->hashed = b->len;
}

/* msg_flush - close, hash and write the current block. */
static void
msg_flush(struct queue_msg *m)
{
	struct qblock *b = m->cur;

	if (b == NULL)
		return;
	msg_close_rec(m);
	msg_hash(m);
	m->cur = NULL;
	if (b->len == 0) {
		block_put(m->sp, b);
		return;
	}
	m->ops++;
	if (m->fd >= 0) {
		op_queue(m->sp, &b->op);
	} else {
		/* Still opening: written as soon as the fd is known. */
		*m->waitq_tail = b;
		m->waitq_tail = &b->next;
	}
}

/* msg_raw - append bytes to the file image, across blocks. */
static void
msg_raw(struct queue_msg *m, const void *p, size_t n)
{
	const unsigned char *s = p;
	size_t k;

	while (n > 0) {
		if (m->cur == NULL)
			m->cur = block_get(m);
		k = QUEUE_BLOCK - m->cur->len;
		if (k > n)
			k = n;
		memcpy(m->cur->data + m->cur->len, s, k);
		m->cur->len += k;
		m->off += k;
		m->pending += k;
		s += k;
		n -= k;
		if (m->cur->len == QUEUE_BLOCK)
			msg_flush(m);
	}
}

/* msg_record - a whole record whose length is known: header, payload. */
static void
msg_record(struct queue_msg *m, int type, const void *p, size_t n)
{
	unsigned char hdr[QUEUE__REC_HDR];

	msg_close_rec(m);
	hdr[0] = (unsigned char)type;
	queue__put_le32(hdr + 1, (uint32_t)n);
	msg_raw(m, hdr, sizeof(hdr));
	msg_raw(m, p, n);
}

void
queue_msg_write(struct queue_msg *m, const char *p, size_t len)
{
	struct qblock *b;
	size_t k;

	if (m->err != 0 || m->state != QM_OPEN)
		return;
	/*
	 * Message bytes go into one 'M' record per block; its length is
	 * filled in when the block is written (msg_close_rec), so a record
	 * never spans blocks and small writes add no framing.
	 */
	while (len > 0) {
		if (m->cur == NULL)
			m->cur = block_get(m);
		b = m->cur;
		if (m->mrec == NO_REC) {
			if (QUEUE_BLOCK - b->len <= QUEUE__REC_HDR) {
				msg_flush(m);
				continue;
			}
			m->mrec = b->len;
			b->len += QUEUE__REC_HDR;
			m->off += QUEUE__REC_HDR;
			m->pending += QUEUE__REC_HDR;
		}
		k = QUEUE_BLOCK - b->len;
		if (k > len)
			k = len;
		memcpy(b->data + b->len, p, k);
		b->len += k;
		m->off += k;
		m->pending += k;
		p += k;
		len -= k;
		if (b->len == QUEUE_BLOCK)
			msg_flush(m);
	}
}

size_t
queue_msg_pending(const struct queue_msg *m)
{
	return m->pending;
}

const char *
queue_msg_id(const struct queue_msg *m)
{
	return m->id;
}

/* ---- message lifetime ---------------------------------------------------- */

/* open_unlink - take m off the spool's list of open messages. */
static void
open_unlink(struct queue_msg *m)
{
	if (m->prev != NULL)
		m->prev->next = m->next;
	else
		m->sp->open = m->next;
	if (m->next != NULL)
		m->next->prev = m->prev;
	m->next = m->prev = NULL;
}

/*
 * msg_free - the last reference is gone: release everything.  An aborted
 * message's file goes only now, because an open still in flight would
 * create it again after an earlier unlink.
 */
static void
msg_free(struct queue_msg *m)
{
	struct queue_spool *sp = m->sp;

	if (m->state == QM_ABORTED && m->fd >= 0 &&
	    unlinkat(sp->tmp_fd, m->id, 0) < 0)
		queue__logf(sp->cfg.log, sp->cfg.arg, LOG_WARNING,
		    "queue: %s/tmp/%s: unlink: %s", sp->dir, m->id,
		    strerror(errno));
	if (m->cur != NULL)
		block_put(sp, m->cur);
	if (m->fd >= 0)
		close(m->fd);
	EVP_MD_CTX_free(m->md);
	free(m);
	sp->nmsgs--;
	spool_close_check(sp);
}

int
queue_msg_new(struct queue_spool *sp, const struct queue_envelope *env,
    struct queue_msg **out)
{
	unsigned char hdr[QUEUE__HDR_LEN];
	struct queue_msg *m = NULL;
	char *enc = NULL;
	size_t elen = 0;
	int rc, tries;

	*out = NULL;
	if (sp->closing)
		return -ESHUTDOWN;
	if ((enc = queue_envelope_encode(env, &elen)) == NULL)
		return -ENOMEM;
	if (elen > QUEUE__MAX_META) {
		rc = -E2BIG;
		goto fail;
	}
	if ((m = calloc(1, sizeof(*m))) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	m->sp = sp;
	m->fd = -1;
	m->mrec = NO_REC;
	if ((m->md = EVP_MD_CTX_new()) == NULL ||
	    !EVP_DigestInit_ex(m->md, sp->sha256, NULL)) {
		rc = -ENOMEM;
		goto fail;
	}
	m->waitq_tail = &m->waitq;
	/*
	 * Creating a file costs a directory update that can block for a
	 * while (hundreds of microseconds on a busy ext4): the ring does it
	 * off the loop, and blocks that fill meanwhile wait for the fd.  An
	 * open error is sticky like a write error and reported by the commit.
	 */
	if (sp->have_openat) {
		queue_id_new(m->id);
		m->op.kind = OP_OPEN;
		m->ops = 1;
		op_queue(sp, &m->op);
		goto opened;
	}
	/* Ids are unique in this process; O_EXCL catches anyone else. */
	for (tries = 0; tries < 4; tries++) {
		queue_id_new(m->id);
		if ((m->fd = openat(sp->tmp_fd, m->id, O_WRONLY | O_CREAT |
		    O_EXCL | O_CLOEXEC, 0600)) >= 0 || errno != EEXIST)
			break;
	}
	if (m->fd < 0) {
		rc = -errno;
		queue__logf(sp->cfg.log, sp->cfg.arg, LOG_ERR,
		    "queue: %s/tmp/%s: open: %s", sp->dir, m->id,
		    strerror(-rc));
		spool_event(sp, QUEUE_EV_WRITE_ERROR, 1);
		goto fail;
	}
opened:
	memcpy(hdr, QUEUE__MAGIC, QUEUE__MAGIC_LEN);
	queue__put_le32(hdr + QUEUE__MAGIC_LEN, QUEUE_VERSION);
	msg_raw(m, hdr, sizeof(hdr));
	msg_record(m, QUEUE_REC_ENVELOPE, enc, elen);
	free(enc);

	m->state = QM_OPEN;
	if ((m->next = sp->open) != NULL)
		m->next->prev = m;
	sp->open = m;
	sp->nmsgs++;
	*out = m;
	return 0;
fail:
	if (m != NULL) {
		EVP_MD_CTX_free(m->md);
		free(m);
	}
	free(enc);
	return rc;
}

void
queue_msg_abort(struct queue_msg *m)
{
	if (m == NULL)
		return;
	open_unlink(m);
	m->state = QM_ABORTED;
	/* The kernel may still be opening or writing from our blocks. */
	if (m->ops == 0)
		msg_free(m);
}

void
queue_msg_commit(struct queue_msg *m, const char *sig, size_t siglen,
    queue_commit_cb cb, void *arg)
{
	struct queue_spool *sp = m->sp;
	unsigned char dig[EVP_MAX_MD_SIZE], hdr[QUEUE__REC_HDR];
	unsigned int dlen = 0;

	m->cb = cb;
	m->cb_arg = arg;
	open_unlink(m);
	if (siglen > QUEUE__MAX_META)
		msg_set_err(m, -E2BIG, "signature");
	if (m->err == 0) {
		msg_record(m, QUEUE_REC_SIGNATURE, sig,
		    sig != NULL ? siglen : 0);
		/* The digest covers every byte before the X record. */
		msg_hash(m);
		if (!EVP_DigestFinal_ex(m->md, dig, &dlen) ||
		    dlen != QUEUE__SHA_LEN)
			msg_set_err(m, -ENOMEM, "sha256");
		m->final = 1;
		hdr[0] = QUEUE_REC_END;
		queue__put_le32(hdr + 1, QUEUE__SHA_LEN);
		msg_raw(m, hdr, sizeof(hdr));
		msg_raw(m, dig, QUEUE__SHA_LEN);
		msg_flush(m);
	}
	m->state = QM_PENDING;
	m->next = NULL;
	*sp->pend_tail = m;
	sp->pend_tail = &m->next;
	sp->npending++;
	if (!sp->timer_on && !sp->due) {
		sp->timer_on = 1;
		uv_timer_start(&sp->timer, spool_timer_cb, sp->window_ms, 0);
	}
	spool_commit_check(sp);
}

/* ---- group commit -------------------------------------------------------- */

/* spool_timer_cb - the oldest pending message has waited a whole window. */
static void
spool_timer_cb(uv_timer_t *h)
{
	struct queue_spool *sp = h->data;

	sp->timer_on = 0;
	sp->due = 1;
	spool_commit_check(sp);
}

/* batch_start - take up to max_batch pending messages as the new batch. */
static void
batch_start(struct queue_spool *sp)
{
	struct queue_msg *m, **tail = &sp->batch;

	if (sp->timer_on) {
		uv_timer_stop(&sp->timer);
		sp->timer_on = 0;
	}
	sp->nbatch = 0;
	sp->batch_wait = 0;
	while (sp->nbatch < sp->cfg.max_batch && (m = sp->pend) != NULL) {
		if ((sp->pend = m->next) == NULL)
			sp->pend_tail = &sp->pend;
		sp->npending--;
		m->next = NULL;
		*tail = m;
		tail = &m->next;
		m->state = QM_BATCH;
		sp->nbatch++;
		if (m->ops > 0)
			sp->batch_wait++;
	}
	/* Whoever is left over has waited long enough: next batch at once. */
	sp->due = sp->npending > 0;
	sp->phase = PH_WRITES;
	if (sp->batch_wait == 0)
		batch_sync(sp);
}

/*
 * spool_commit_check - start a batch if none is on disk and the pending
 * messages are due: enough of them, the window is over, or we are closing.
 */
static void
spool_commit_check(struct queue_spool *sp)
{
	if (sp->phase != PH_NONE || sp->npending == 0)
		return;
	if (sp->npending < sp->cfg.max_batch && !sp->due && !sp->closing)
		return;
	batch_start(sp);
}

/* batch_sync - every write is done: one fdatasync per file, one submit. */
static void
batch_sync(struct queue_spool *sp)
{
	struct queue_msg *m;

	sp->phase = PH_SYNC;
	sp->batch_wait = 0;
	sp->nsynced = 0;
	sp->batch_t0 = uv_hrtime();
	for (m = sp->batch; m != NULL; m = m->next) {
		if (m->err != 0)
			continue;
		/*
		 * fdatasync is enough for a new file: it flushes the size and
		 * block allocation, the metadata needed to read the data.
		 */
		m->op.kind = OP_SYNC;
		op_queue(sp, &m->op);
		sp->batch_wait++;
		sp->nsynced++;
	}
	if (sp->batch_wait == 0)
		batch_dir(sp);
}

/* rename_now - rename(2) on the loop, for kernels without the ring op. */
static void
rename_now(struct queue_spool *sp, struct queue_msg *m)
{
	if (renameat(sp->tmp_fd, m->id, sp->active_fd, m->id) < 0)
		msg_set_err(m, -errno, "rename");
	else
		m->renamed = 1;
}

/* batch_rename - every file is on disk: move them all into active/. */
static void
batch_rename(struct queue_spool *sp)
{
	struct queue_msg *m;

	sp->phase = PH_RENAME;
	sp->batch_wait = 0;
	for (m = sp->batch; m != NULL; m = m->next) {
		if (m->err != 0)
			continue;
		if (!sp->have_renameat) {
			rename_now(sp, m);
			continue;
		}
		m->op.kind = OP_RENAME;
		op_queue(sp, &m->op);
		sp->batch_wait++;
	}
	if (sp->batch_wait == 0)
		batch_dir(sp);
}

/* batch_done - report every message of the batch, then maybe the next. */
static void
batch_done(struct queue_spool *sp, int dres)
{
	struct queue_msg *m, *next, *list = sp->batch;

	if (dres < 0)
		queue__logf(sp->cfg.log, sp->cfg.arg, LOG_ERR,
		    "queue: %s/active: fsync: %s", sp->dir, strerror(-dres));
	if (sp->nsynced > 0) {
		spool_event(sp, QUEUE_EV_FSYNC_BATCH, (double)sp->nsynced);
		spool_event(sp, QUEUE_EV_FSYNC_SECONDS,
		    (double)(uv_hrtime() - sp->batch_t0) / 1e9);
	}
	sp->batch = NULL;
	sp->nbatch = sp->nsynced = 0;
	sp->phase = PH_NONE;
	for (m = list; m != NULL; m = next) {
		next = m->next;
		if (m->renamed && dres < 0)
			msg_set_err(m, dres, "fsync active/");
		if (m->err == 0)
			spool_event(sp, QUEUE_EV_COMMITTED, 1);
		else if ((m->fd >= 0 || m->renamed) &&
		    unlinkat(m->renamed ? sp->active_fd : sp->tmp_fd, m->id,
		    0) < 0 && errno != ENOENT)
			queue__logf(sp->cfg.log, sp->cfg.arg, LOG_ERR,
			    "queue: %s: unlink: %s", m->id, strerror(errno));
		if (m->cb != NULL)
			m->cb(m->cb_arg, m->err, m->id);
		/* After the 250: the queue manager learns of it (issue 4). */
		if (m->err == 0 && sp->cfg.committed != NULL)
			sp->cfg.committed(sp->cfg.arg, m->id);
		msg_free(m);
	}
	spool_commit_check(sp);
}

/* batch_dir - the renames are done: one fsync of active/ covers them. */
static void
batch_dir(struct queue_spool *sp)
{
	struct queue_msg *m;

	sp->phase = PH_DIR;
	for (m = sp->batch; m != NULL; m = m->next)
		if (m->renamed)
			break;
	if (m == NULL)
		batch_done(sp, 0);
	else
		op_queue(sp, &sp->op_dir);
}

/* ---- completions --------------------------------------------------------- */

/*
 * msg_op_done - one of m's own operations (open, block write) is over; the
 * last one lets an aborted message go or its batch move on.
 */
static void
msg_op_done(struct queue_spool *sp, struct queue_msg *m)
{
	if (--m->ops > 0)
		return;
	if (m->state == QM_ABORTED)
		msg_free(m);
	else if (m->state == QM_BATCH && sp->phase == PH_WRITES &&
	    --sp->batch_wait == 0)
		batch_sync(sp);
}

/* block_done - a block write finished (or half finished). */
static void
block_done(struct queue_spool *sp, struct qblock *b, int res)
{
	struct queue_msg *m = b->msg;

	if (res > 0 && (size_t)res < b->len - b->done) {
		/* Short write: ask for the rest, which reports the cause. */
		b->done += (size_t)res;
		op_queue(sp, &b->op);
		return;
	}
	if (res == 0)
		res = -EIO;             /* no progress and no reason */
	if (res < 0 && m->state != QM_ABORTED)
		msg_set_err(m, res, "write");
	m->pending -= b->len;
	block_put(sp, b);
	msg_op_done(sp, m);
}

/* open_done - the file exists (or cannot): write what waited for it. */
static void
open_done(struct queue_spool *sp, struct queue_msg *m, int res)
{
	struct qblock *b;

	if (res >= 0) {
		m->fd = res;
		/* Aborted meanwhile: nothing to write; msg_free unlinks. */
		if (m->state == QM_ABORTED)
			res = -ECANCELED;
	} else if (m->state != QM_ABORTED) {
		msg_set_err(m, res, "open");
	}
	while ((b = m->waitq) != NULL) {
		m->waitq = b->next;
		if (res >= 0) {
			op_queue(sp, &b->op);
			continue;
		}
		m->pending -= b->len;
		block_put(sp, b);
		m->ops--;
	}
	m->waitq_tail = &m->waitq;
	msg_op_done(sp, m);
}

/* op_done - dispatch one completion. */
static void
op_done(struct queue_spool *sp, struct qop *op, int res)
{
	struct queue_msg *m;

	switch (op->kind) {
	case OP_OPEN:
		open_done(sp, container_of(op, struct queue_msg, op), res);
		break;
	case OP_WRITE:
		block_done(sp, container_of(op, struct qblock, op), res);
		break;
	case OP_SYNC:
		m = container_of(op, struct queue_msg, op);
		if (res < 0)
			msg_set_err(m, res, "fdatasync");
		if (--sp->batch_wait == 0)
			batch_rename(sp);
		break;
	case OP_RENAME:
		m = container_of(op, struct queue_msg, op);
		if (res == -EINVAL || res == -EOPNOTSUPP) {
			/* IORING_OP_RENAMEAT is new in 5.11. */
			sp->have_renameat = 0;
			rename_now(sp, m);
		} else if (res < 0) {
			msg_set_err(m, res, "rename");
		} else {
			m->renamed = 1;
		}
		if (--sp->batch_wait == 0)
			batch_dir(sp);
		break;
	case OP_DIRSYNC:
		batch_done(sp, res);
		break;
	}
}

/* spool_poll_cb - the ring's eventfd fired: reap every completion. */
static void
spool_poll_cb(uv_poll_t *h, int status, int events)
{
	struct queue_spool *sp = h->data;
	struct io_uring_cqe *cqe;
	struct qop *op;
	uint64_t v;
	int res;

	(void)events;
	if (status < 0)
		queue__logf(sp->cfg.log, sp->cfg.arg, LOG_ERR,
		    "queue: eventfd poll: %s", uv_strerror(status));
	if (read(sp->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		queue__logf(sp->cfg.log, sp->cfg.arg, LOG_ERR,
		    "queue: eventfd read: %s", strerror(errno));
	while (io_uring_peek_cqe(&sp->ring, &cqe) == 0) {
		op = io_uring_cqe_get_data(cqe);
		res = cqe->res;
		io_uring_cqe_seen(&sp->ring, cqe);
		if (--sp->inflight == 0)
			uv_unref((uv_handle_t *)&sp->poll);
		op_done(sp, op, res);
	}
	spool_close_check(sp);
}

/* ---- the spool ----------------------------------------------------------- */

/* spool_release - free what spool_new set up, except the libuv handles. */
static void
spool_release(struct queue_spool *sp)
{
	struct qblock *b;

	if (sp->ring_ok)
		io_uring_queue_exit(&sp->ring);
	if (sp->efd >= 0)
		close(sp->efd);
	if (sp->tmp_fd >= 0)
		close(sp->tmp_fd);
	if (sp->active_fd >= 0)
		close(sp->active_fd);
	while ((b = sp->free_blocks) != NULL) {
		sp->free_blocks = b->next;
		free(b);
	}
	EVP_MD_free(sp->sha256);
	free(sp->dir);
	free(sp);
}

/* spool_handle_closed - one handle is closed; the last one frees the spool. */
static void
spool_handle_closed(uv_handle_t *h)
{
	struct queue_spool *sp = h->data;
	void (*cb)(void *) = sp->close_cb;
	void *arg = sp->close_arg;

	if (--sp->nhandles > 0)
		return;
	spool_release(sp);
	if (cb != NULL)
		cb(arg);
}

/* spool_close_check - closing and nothing left in flight: close handles. */
static void
spool_close_check(struct queue_spool *sp)
{
	if (!sp->closing || sp->closed || sp->nmsgs > 0 ||
	    sp->phase != PH_NONE || sp->inflight > 0)
		return;
	sp->closed = 1;
	uv_close((uv_handle_t *)&sp->poll, spool_handle_closed);
	uv_close((uv_handle_t *)&sp->timer, spool_handle_closed);
	uv_close((uv_handle_t *)&sp->prepare, spool_handle_closed);
}

/* mkdir_p - make dir and its missing parents (spool_dir may be var/spool). */
static int
mkdir_p(const char *dir)
{
	char *p, *s;
	int rc = 0;

	if (mkdir(dir, 0700) == 0 || errno == EEXIST)
		return 0;
	if (errno != ENOENT)
		return -errno;
	s = queue__xstrdup(dir);
	for (p = s + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(s, 0755) < 0 && errno != EEXIST) {
			rc = -errno;
			break;
		}
		*p = '/';
	}
	if (rc == 0 && mkdir(s, 0700) < 0 && errno != EEXIST)
		rc = -errno;
	free(s);
	return rc;
}

/* spool_subdir - create (if needed) and open <spool_dir>/name. */
static int
spool_subdir(int dfd, const char *name, int *created)
{
	int fd;

	if (mkdirat(dfd, name, 0700) == 0)
		*created = 1;
	else if (errno != EEXIST)
		return -errno;
	if ((fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -errno;
	return fd;
}

int
queue_spool_new(uv_loop_t *loop, const struct queue_config *cfg,
    struct queue_spool **out)
{
	struct io_uring_probe *probe;
	struct queue_spool *sp;
	unsigned workers[2], entries;
	int rc, dfd = -1, created = 0;

	*out = NULL;
	if (cfg->spool_dir == NULL || cfg->spool_dir[0] == '\0')
		return -EINVAL;
	if ((sp = calloc(1, sizeof(*sp))) == NULL)
		return -ENOMEM;
	sp->loop = loop;
	sp->cfg = *cfg;
	sp->dir = queue__xstrdup(cfg->spool_dir);
	sp->cfg.spool_dir = sp->dir;
	/*
	 * 0 means the default (queue.h).  uv timers count milliseconds, so
	 * the window is rounded up to whole ones.
	 */
	if (sp->cfg.commit_window_us == 0)
		sp->cfg.commit_window_us = 1000;
	if (sp->cfg.max_batch == 0)
		sp->cfg.max_batch = 256;
	sp->window_ms = (sp->cfg.commit_window_us + 999) / 1000;
	sp->tmp_fd = sp->active_fd = sp->efd = -1;
	sp->deferred_tail = &sp->deferred;
	sp->pend_tail = &sp->pend;
	sp->op_dir.kind = OP_DIRSYNC;

	if ((rc = mkdir_p(sp->dir)) != 0)
		goto fail;
	if ((dfd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rc = -errno;
		goto fail;
	}
	if ((rc = sp->tmp_fd = spool_subdir(dfd, "tmp", &created)) < 0 ||
	    (rc = sp->active_fd = spool_subdir(dfd, "active", &created)) < 0)
		goto fail;
	/* New directory entries must survive a crash like the files will. */
	if (created && fsync(dfd) < 0) {
		rc = -errno;
		goto fail;
	}
	close(dfd);
	dfd = -1;
	if ((sp->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	/* Room for a whole batch's fsyncs in one submission. */
	for (entries = QUEUE_RING_ENTRIES; entries < sp->cfg.max_batch &&
	    entries < QUEUE_RING_MAX; entries *= 2)
		;
	if ((rc = io_uring_queue_init(entries, &sp->ring, 0)) < 0)
		goto fail;
	sp->ring_ok = 1;
	if ((probe = io_uring_get_probe_ring(&sp->ring)) != NULL) {
		sp->have_openat = io_uring_opcode_supported(probe,
		    IORING_OP_OPENAT);
		sp->have_renameat = io_uring_opcode_supported(probe,
		    IORING_OP_RENAMEAT);
		io_uring_free_probe(probe);
	}
	/*
	 * The kernel runs each fsync on an io-wq worker, and by default has
	 * at most 4 per CPU: a batch's fdatasyncs would then go 8 at a time
	 * and each group would wait for its own journal commit.  With a
	 * worker per message they all join the same one (measured here: 64
	 * fdatasyncs in 13 ms instead of 40).  Workers are made on demand
	 * and exit when idle.  Kernels before 5.15 lack the call: ignored.
	 */
	workers[0] = sp->cfg.max_batch < 1024 ? sp->cfg.max_batch : 1024;
	workers[1] = 0;
	(void)io_uring_register_iowq_max_workers(&sp->ring, workers);
	if ((sp->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
		rc = -errno;
		goto fail;
	}
	if ((rc = io_uring_register_eventfd(&sp->ring, sp->efd)) < 0)
		goto fail;
	if ((rc = uv_poll_init(loop, &sp->poll, sp->efd)) != 0)
		goto fail;
	uv_timer_init(loop, &sp->timer);
	uv_prepare_init(loop, &sp->prepare);
	sp->nhandles = 3;
	sp->poll.data = sp->timer.data = sp->prepare.data = sp;
	if ((rc = uv_poll_start(&sp->poll, UV_READABLE, spool_poll_cb)) != 0) {
		/* The handles exist now: free through their close callbacks. */
		sp->closing = 1;
		spool_close_check(sp);
		return rc;
	}
	/* Only work in flight keeps the loop alive (see op_queue). */
	uv_unref((uv_handle_t *)&sp->poll);
	uv_unref((uv_handle_t *)&sp->prepare);
	*out = sp;
	return 0;
fail:
	if (dfd >= 0)
		close(dfd);
	spool_release(sp);
	return rc;
}

void
queue_spool_close(struct queue_spool *sp, void (*cb)(void *arg), void *arg)
{
	sp->closing = 1;
	sp->close_cb = cb;
	sp->close_arg = arg;
	while (sp->open != NULL)
		queue_msg_abort(sp->open);
	/* Pending messages go now rather than at the end of the window. */
	spool_commit_check(sp);
	spool_close_check(sp);
}
