/*
 * file.c - reading queue files back: the checker, the readers that delivery
 * and `signetctl queue show` use, and start-up recovery.
 *
 * Everything here is plain blocking I/O through one 64 KiB buffer: it runs
 * at start-up, in signetctl, on a delivery worker and in tests, never on a
 * loop that serves SMTP sessions.  One walker (qf_walk) parses the framing
 * of queue.h (magic, version, E M* S? X in that order, X last and 32 bytes)
 * and, when asked, hashes every byte before the X record and compares.
 * Message bytes are streamed to a callback or skipped with lseek, never
 * loaded whole, so a 50 MB message costs 64 KiB of memory.  The
 * resumable reader (queue_reader_*) walks the same framing one step per
 * call, for the delivery client's thread-pool reads.
 *
 * After X come the 'R' records of issue 4 (delivery state).  Each carries
 * its own short digest.  The walker reads them all; a damaged tail is
 * forgiven only where a crash during queue_file_mark could have left it:
 * an incomplete last record, a complete last record whose digest fails
 * (size extended, data not written), or zero bytes up to the end.
 * Anything else after X (another type, a bad record followed by more
 * bytes, a valid record naming a recipient the envelope lacks) is -EINVAL.
 * queue_file_mark cuts such a torn tail off before it appends, so a torn
 * record never ends up in the middle of a file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "queue/queue_int.h"

#define QF_BUF (64 * 1024)
/*
 * Records are cut at the writer's 64 KiB block boundaries, so a 64 KiB
 * read would always cover the 'M' payload the walker means to skip; when
 * skipping, read small and lseek over the payloads instead.
 */
#define QF_SKIPREAD 4096

struct qf_walk {
	int fd;
	EVP_MD_CTX *md;         /* NULL: framing only, message bytes skipped */
	int (*on_msg)(void *, const char *, size_t);
	void *arg;
	char *env, *sig;        /* record payloads, malloc'd */
	size_t envlen, siglen;
	uint64_t msg_size;
	uint64_t pos;           /* bytes consumed from the start */
	uint64_t valid_end;     /* after X and the last good 'R' record */
	size_t rmax;            /* highest 'R' recipient index + 1 */
	struct queue_rcpt_status *st;   /* if not NULL: 'R' records go here */
	size_t nst;
	size_t rpos, wpos;
	size_t readsz;          /* QF_BUF, or QF_SKIPREAD when skipping */
	unsigned char buf[QF_BUF];
};

/* qf_fill - make at least one unread byte available; 0, 1 at EOF, -errno. */
static int
qf_fill(struct qf_walk *w)
{
	ssize_t n;

	if (w->rpos < w->wpos)
		return 0;
	w->rpos = w->wpos = 0;
	do
		n = read(w->fd, w->buf, w->readsz);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return 1;
	w->wpos = (size_t)n;
	return 0;
}

/*
 * qf_take - consume n bytes: copied to dst if not NULL, hashed if hash and
 * there is a digest, passed to on_msg if msg.  A file that ends first is
 * truncated: -EINVAL.
 */
static int
qf_take(struct qf_walk *w, void *dst, size_t n, int hash, int msg)
{
	unsigned char *d = dst;
	size_t k;
	int rc;

	while (n > 0) {
		if ((rc = qf_fill(w)) != 0)
			return rc > 0 ? -EINVAL : rc;
		k = w->wpos - w->rpos;
		if (k > n)
			k = n;
		if (hash && w->md != NULL &&
		    !EVP_DigestUpdate(w->md, w->buf + w->rpos, k))
			return -ENOMEM;
		if (d != NULL) {
			memcpy(d, w->buf + w->rpos, k);
			d += k;
		}
		if (msg && w->on_msg != NULL &&
		    (rc = w->on_msg(w->arg, (const char *)w->buf + w->rpos,
		    k)) != 0)
			return rc;
		w->rpos += k;
		w->pos += k;
		n -= k;
	}
	return 0;
}

/*
 * qf_skip - step over n message bytes without reading them (no digest).
 * Seeking past the end is fine: the next header read then finds EOF and
 * the file is rejected as truncated.
 */
static int
qf_skip(struct qf_walk *w, uint64_t n)
{
	size_t k = w->wpos - w->rpos;

	w->pos += n;
	if (k >= n) {
		w->rpos += (size_t)n;
		return 0;
	}
	w->rpos = w->wpos = 0;
	if (lseek(w->fd, (off_t)(n - k), SEEK_CUR) < 0)
		return -errno;
	return 0;
}

/* qf_meta - read a whole 'E' or 'S' payload into a new buffer. */
static int
qf_meta(struct qf_walk *w, uint32_t len, char **out, size_t *outlen)
{
	int rc;

	if (len > QUEUE__MAX_META)
		return -EINVAL;
	if ((*out = malloc(len + 1)) == NULL)
		return -ENOMEM;
	if ((rc = qf_take(w, *out, len, 1, 0)) != 0)
		return rc;
	(*out)[len] = '\0';
	*outlen = len;
	return 0;
}

/* qf_get - n bytes to dst, no digest; 1 if the file ends first, -errno. */
static int
qf_get(struct qf_walk *w, unsigned char *dst, size_t n)
{
	size_t k;
	int rc;

	while (n > 0) {
		if ((rc = qf_fill(w)) != 0)
			return rc;
		k = w->wpos - w->rpos;
		if (k > n)
			k = n;
		memcpy(dst, w->buf + w->rpos, k);
		w->rpos += k;
		w->pos += k;
		dst += k;
		n -= k;
	}
	return 0;
}

/* qf_rest_zero - 1 if only zero bytes remain, 0 if not, -errno. */
static int
qf_rest_zero(struct qf_walk *w)
{
	int rc;

	for (;;) {
		if ((rc = qf_fill(w)) != 0)
			return rc > 0 ? 1 : rc;
		for (; w->rpos < w->wpos; w->rpos++)
			if (w->buf[w->rpos] != 0)
				return 0;
	}
}

/* qf_rcpt - apply one good 'R' record body (after the header). */
static int
qf_rcpt(struct qf_walk *w, const unsigned char *p, size_t reasonlen)
{
	struct queue_rcpt_status *st;
	uint32_t idx = queue__get_le32(p);
	unsigned state = p[4];

	if (state > QUEUE_RCPT_BOUNCED || idx == UINT32_MAX)
		return -EINVAL;
	if ((size_t)idx + 1 > w->rmax)
		w->rmax = (size_t)idx + 1;
	if (w->st == NULL)
		return 0;
	if (idx >= w->nst)
		return -EINVAL;
	st = &w->st[idx];
	free(st->reason);
	st->reason = NULL;
	if (reasonlen > 0) {
		if ((st->reason = malloc(reasonlen + 1)) == NULL)
			return -ENOMEM;
		memcpy(st->reason, p + QUEUE__R_FIXED, reasonlen);
		st->reason[reasonlen] = '\0';
	}
	st->state = (enum queue_rcpt_state)state;
	st->last_try = (time_t)(int64_t)queue__get_le64(p + 5);
	st->next_try = (time_t)(int64_t)queue__get_le64(p + 13);
	st->attempts = queue__get_le32(p + 21);
	return 0;
}

/*
 * qf_tail - the 'R' records after X, up to the end.  A torn tail (see the
 * top of the file) ends the walk with 0; valid_end then marks where it
 * starts.
 */
static int
qf_tail(struct qf_walk *w)
{
	unsigned char sum[EVP_MAX_MD_SIZE], *rec;
	unsigned int slen;
	uint32_t len;
	int rc;

	for (;;) {
		w->valid_end = w->pos;
		if ((rc = qf_fill(w)) != 0)
			return rc > 0 ? 0 : rc;
		if (w->buf[w->rpos] == 0) {
			rc = qf_rest_zero(w);
			return rc < 0 ? rc : rc > 0 ? 0 : -EINVAL;
		}
		if (w->buf[w->rpos] != QUEUE_REC_RCPT_STATE)
			return -EINVAL;
		if ((rec = malloc(QUEUE__REC_HDR)) == NULL)
			return -ENOMEM;
		if ((rc = qf_get(w, rec, QUEUE__REC_HDR)) != 0) {
			free(rec);
			return rc > 0 ? 0 : rc;
		}
		len = queue__get_le32(rec + 1);
		if (len < QUEUE__R_FIXED + QUEUE__R_SUM ||
		    len > QUEUE__R_FIXED + QUEUE__R_SUM + QUEUE__MAX_META) {
			free(rec);
			return -EINVAL;
		}
		free(rec);
		if ((rec = malloc(QUEUE__REC_HDR + (size_t)len)) == NULL)
			return -ENOMEM;
		rec[0] = QUEUE_REC_RCPT_STATE;
		queue__put_le32(rec + 1, len);
		if ((rc = qf_get(w, rec + QUEUE__REC_HDR, len)) != 0) {
			free(rec);
			return rc > 0 ? 0 : rc;
		}
		slen = 0;
		if (!EVP_Digest(rec, QUEUE__REC_HDR + len - QUEUE__R_SUM, sum,
		    &slen, EVP_sha256(), NULL)) {
			free(rec);
			return -ENOMEM;
		}
		if (CRYPTO_memcmp(sum, rec + QUEUE__REC_HDR + len -
		    QUEUE__R_SUM, QUEUE__R_SUM) != 0) {
			free(rec);
			/* Forgiven only as the very last thing in the file. */
			if ((rc = qf_fill(w)) < 0)
				return rc;
			return rc > 0 ? 0 : -EINVAL;
		}
		rc = qf_rcpt(w, rec + QUEUE__REC_HDR,
		    len - QUEUE__R_FIXED - QUEUE__R_SUM);
		free(rec);
		if (rc != 0)
			return rc;
	}
}

/* qf_end - the 'X' payload: digest check (if hashing), then the tail. */
static int
qf_end(struct qf_walk *w, uint32_t len)
{
	unsigned char want[QUEUE__SHA_LEN], got[EVP_MAX_MD_SIZE];
	unsigned int glen = 0;
	int rc;

	if (len != QUEUE__SHA_LEN)
		return -EINVAL;
	if ((rc = qf_take(w, want, sizeof(want), 0, 0)) != 0)
		return rc;
	if (w->md != NULL) {
		if (!EVP_DigestFinal_ex(w->md, got, &glen))
			return -ENOMEM;
		if (glen != QUEUE__SHA_LEN ||
		    CRYPTO_memcmp(want, got, glen) != 0)
			return -EINVAL;
	}
	return qf_tail(w);
}

/*
 * qf_walk_fd - parse w->fd from its start to its end.  With verify, every
 * byte before the X record is hashed and the digest must match; without
 * it, message bytes are skipped and only the framing is checked.  The fd
 * stays open.
 */
static int
qf_walk_fd(struct qf_walk *w, int verify)
{
	unsigned char hdr[QUEUE__HDR_LEN];
	enum { WANT_E, WANT_MSX, WANT_X } state = WANT_E;
	uint32_t len;
	int rc, type;

	w->rpos = w->wpos = 0;
	w->pos = w->valid_end = 0;
	w->readsz = verify || w->on_msg != NULL ? QF_BUF : QF_SKIPREAD;
	if (verify) {
		if ((w->md = EVP_MD_CTX_new()) == NULL ||
		    !EVP_DigestInit_ex(w->md, EVP_sha256(), NULL)) {
			rc = -ENOMEM;
			goto out;
		}
	}
	if ((rc = qf_take(w, hdr, QUEUE__HDR_LEN, 1, 0)) != 0)
		goto out;
	if (memcmp(hdr, QUEUE__MAGIC, QUEUE__MAGIC_LEN) != 0 ||
	    queue__get_le32(hdr + QUEUE__MAGIC_LEN) != QUEUE_VERSION) {
		rc = -EINVAL;
		goto out;
	}
	for (;;) {
		/* The X record's own header is not covered by its digest. */
		if ((rc = qf_take(w, hdr, QUEUE__REC_HDR, 0, 0)) != 0)
			goto out;
		type = hdr[0];
		len = queue__get_le32(hdr + 1);
		if (type != QUEUE_REC_END && w->md != NULL &&
		    !EVP_DigestUpdate(w->md, hdr, QUEUE__REC_HDR)) {
			rc = -ENOMEM;
			goto out;
		}
		rc = -EINVAL;
		switch (type) {
		case QUEUE_REC_ENVELOPE:
			if (state != WANT_E)
				goto out;
			if ((rc = qf_meta(w, len, &w->env, &w->envlen)) != 0)
				goto out;
			state = WANT_MSX;
			break;
		case QUEUE_REC_MESSAGE:
			if (state != WANT_MSX)
				goto out;
			w->msg_size += len;
			if (verify || w->on_msg != NULL)
				rc = qf_take(w, NULL, len, 1, 1);
			else
				rc = qf_skip(w, len);
			if (rc != 0)
				goto out;
			break;
		case QUEUE_REC_SIGNATURE:
			if (state != WANT_MSX)
				goto out;
			if ((rc = qf_meta(w, len, &w->sig, &w->siglen)) != 0)
				goto out;
			state = WANT_X;
			break;
		case QUEUE_REC_END:
			if (state == WANT_E)
				goto out;
			rc = qf_end(w, len);
			goto out;
		default:
			goto out;
		}
	}
out:
	EVP_MD_CTX_free(w->md);
	w->md = NULL;
	return rc;
}

/* qf_walk - qf_walk_fd on path, opened read-only. */
static int
qf_walk(const char *path, struct qf_walk *w, int verify)
{
	int rc;

	if ((w->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -errno;
	rc = qf_walk_fd(w, verify);
	close(w->fd);
	w->fd = -1;
	return rc;
}

/* qf_new - a zeroed walker (the 64 KiB buffer is too big for the stack). */
static struct qf_walk *
qf_new(void)
{
	struct qf_walk *w = malloc(sizeof(*w));

	if (w != NULL) {
		memset(w, 0, offsetof(struct qf_walk, buf));
		w->fd = -1;
	}
	return w;
}

/* qf_free - release a walker and whatever payloads it still holds. */
static void
qf_free(struct qf_walk *w)
{
	if (w == NULL)
		return;
	free(w->env);
	free(w->sig);
	free(w);
}

int
queue_file_check(const char *path)
{
	struct queue_envelope env;
	struct qf_walk *w;
	int rc;

	if ((w = qf_new()) == NULL)
		return -ENOMEM;
	/* A file whose digest matches but whose envelope does not parse
	 * could never be delivered: corrupt too. */
	if ((rc = qf_walk(path, w, 1)) == 0 &&
	    (rc = queue_envelope_decode(w->env, w->envlen, &env)) == 0) {
		if (w->rmax > env.nrcpt)
			rc = -EINVAL;
		queue_envelope_free(&env);
	}
	qf_free(w);
	return rc;
}

int
queue_file_read(const char *path, struct queue_file *qf)
{
	struct qf_walk *w;
	int rc;

	memset(qf, 0, sizeof(*qf));
	if ((w = qf_new()) == NULL)
		return -ENOMEM;
	/*
	 * Framing only: the digest costs a read of the whole message, which
	 * queue_file_message does anyway while it streams.
	 */
	if ((rc = qf_walk(path, w, 0)) != 0)
		goto fail;
	if ((rc = queue_envelope_decode(w->env, w->envlen, &qf->env)) != 0)
		goto fail;
	if (w->rmax > qf->env.nrcpt) {
		rc = -EINVAL;
		goto fail;
	}
	if (w->siglen > 0) {
		qf->sig = w->sig;
		qf->siglen = w->siglen;
		w->sig = NULL;
	}
	qf->msg_size = w->msg_size;
	qf_free(w);
	return 0;
fail:
	qf_free(w);
	queue_file_free(qf);
	return rc;
}

/*
 * queue_file_message - the digest is checked as the bytes go by, so fn has
 * seen every chunk by the time a damaged file is noticed (-EINVAL at the
 * end).  Delivery must therefore treat a non-zero return as "do not finish
 * the transaction" (no final dot), not merely as a log line.
 */
int
queue_file_message(const char *path, int (*fn)(void *arg, const char *p,
    size_t len), void *arg)
{
	struct qf_walk *w;
	int rc;

	if ((w = qf_new()) == NULL)
		return -ENOMEM;
	w->on_msg = fn;
	w->arg = arg;
	rc = qf_walk(path, w, 1);
	qf_free(w);
	return rc;
}

void
queue_file_free(struct queue_file *qf)
{
	if (qf == NULL)
		return;
	queue_envelope_free(&qf->env);
	free(qf->sig);
	memset(qf, 0, sizeof(*qf));
}

/* ---- resumable reader ---------------------------------------------------- */

/*
 * The same framing as qf_walk_fd, turned inside out: the walk's position
 * lives in struct queue_reader so that each queue_reader_read can return
 * as soon as it has message bytes, and the digest is kept across calls.
 */
enum qr_state { QR_MAGIC, QR_REC, QR_MSG, QR_END, QR_ERR };

struct queue_reader {
	int fd;
	EVP_MD_CTX *md;
	enum qr_state state;
	enum { QR_WANT_E, QR_WANT_MSX, QR_WANT_X } want;
	uint64_t left;          /* payload bytes left in the current 'M' */
	long err;               /* sticky, with QR_ERR */
	size_t rpos, wpos;
	unsigned char buf[QF_BUF];
};

/* qr_fill - one read when buf is used up: 0, 1 at EOF, -errno. */
static int
qr_fill(struct queue_reader *r)
{
	ssize_t n;

	if (r->rpos < r->wpos)
		return 0;
	r->rpos = r->wpos = 0;
	do
		n = read(r->fd, r->buf, sizeof(r->buf));
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return 1;
	r->wpos = (size_t)n;
	return 0;
}

/*
 * qr_take - consume n framing bytes: hashed if hash, copied to dst if not
 * NULL.  A file that ends first is truncated: -EINVAL.
 */
static int
qr_take(struct queue_reader *r, void *dst, size_t n, int hash)
{
	unsigned char *d = dst;
	size_t k;
	int rc;

	while (n > 0) {
		if ((rc = qr_fill(r)) != 0)
			return rc > 0 ? -EINVAL : rc;
		k = r->wpos - r->rpos;
		if (k > n)
			k = n;
		if (hash && !EVP_DigestUpdate(r->md, r->buf + r->rpos, k))
			return -ENOMEM;
		if (d != NULL) {
			memcpy(d, r->buf + r->rpos, k);
			d += k;
		}
		r->rpos += k;
		n -= k;
	}
	return 0;
}

/* qr_fail - make err sticky and return it. */
static long
qr_fail(struct queue_reader *r, long err)
{
	r->state = QR_ERR;
	r->err = err;
	return err;
}

/* qr_record - the next record header and, unless it is 'M', its payload. */
static long
qr_record(struct queue_reader *r)
{
	unsigned char hdr[QUEUE__REC_HDR], want[QUEUE__SHA_LEN];
	unsigned char got[EVP_MAX_MD_SIZE];
	unsigned int glen = 0;
	uint32_t len;
	int rc, type;

	/* The X record's own header is not covered by its digest. */
	if ((rc = qr_take(r, hdr, sizeof(hdr), 0)) != 0)
		return qr_fail(r, rc);
	type = hdr[0];
	len = queue__get_le32(hdr + 1);
	if (type != QUEUE_REC_END &&
	    !EVP_DigestUpdate(r->md, hdr, sizeof(hdr)))
		return qr_fail(r, -ENOMEM);
	switch (type) {
	case QUEUE_REC_ENVELOPE:
		if (r->want != QR_WANT_E || len > QUEUE__MAX_META)
			return qr_fail(r, -EINVAL);
		r->want = QR_WANT_MSX;
		break;
	case QUEUE_REC_MESSAGE:
		if (r->want != QR_WANT_MSX)
			return qr_fail(r, -EINVAL);
		if ((r->left = len) > 0)
			r->state = QR_MSG;
		return 0;
	case QUEUE_REC_SIGNATURE:
		if (r->want != QR_WANT_MSX || len > QUEUE__MAX_META)
			return qr_fail(r, -EINVAL);
		r->want = QR_WANT_X;
		break;
	case QUEUE_REC_END:
		if (r->want == QR_WANT_E || len != QUEUE__SHA_LEN)
			return qr_fail(r, -EINVAL);
		if ((rc = qr_take(r, want, sizeof(want), 0)) != 0)
			return qr_fail(r, rc);
		if (!EVP_DigestFinal_ex(r->md, got, &glen))
			return qr_fail(r, -ENOMEM);
		if (glen != QUEUE__SHA_LEN || CRYPTO_memcmp(want, got, glen) != 0)
			return qr_fail(r, -EINVAL);
		r->state = QR_END;
		return 0;
	default:
		return qr_fail(r, -EINVAL);
	}
	/* 'E' and 'S' are hashed and skipped: delivery has them already. */
	if ((rc = qr_take(r, NULL, len, 1)) != 0)
		return qr_fail(r, rc);
	return 0;
}

int
queue_reader_open(const char *path, struct queue_reader **out)
{
	struct queue_reader *r;
	int rc;

	*out = NULL;
	if ((r = malloc(sizeof(*r))) == NULL)
		return -ENOMEM;
	memset(r, 0, offsetof(struct queue_reader, buf));
	if ((r->md = EVP_MD_CTX_new()) == NULL ||
	    !EVP_DigestInit_ex(r->md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(r->md);
		free(r);
		return -ENOMEM;
	}
	if ((r->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		rc = -errno;
		EVP_MD_CTX_free(r->md);
		free(r);
		return rc;
	}
	r->state = QR_MAGIC;
	*out = r;
	return 0;
}

/*
 * queue_reader_read - framing until there are message bytes; those come
 * from what the buffer holds, or (when the caller's buffer is at least as
 * big as ours) straight from one read(2) into it.
 */
long
queue_reader_read(struct queue_reader *r, char *buf, size_t cap)
{
	unsigned char hdr[QUEUE__HDR_LEN];
	ssize_t n;
	size_t k;
	long rc;

	if (cap == 0)
		return -EINVAL;
	for (;;) {
		switch (r->state) {
		case QR_END:
			return 0;
		case QR_ERR:
			return r->err;
		case QR_MAGIC:
			if ((rc = qr_take(r, hdr, sizeof(hdr), 1)) != 0)
				return qr_fail(r, rc);
			if (memcmp(hdr, QUEUE__MAGIC, QUEUE__MAGIC_LEN) != 0 ||
			    queue__get_le32(hdr + QUEUE__MAGIC_LEN) !=
			    QUEUE_VERSION)
				return qr_fail(r, -EINVAL);
			r->state = QR_REC;
			break;
		case QR_REC:
			if ((rc = qr_record(r)) != 0)
				return rc;
			break;
		case QR_MSG:
			k = cap;
			if (k > r->left)
				k = (size_t)r->left;
			if (r->rpos < r->wpos) {
				if (k > r->wpos - r->rpos)
					k = r->wpos - r->rpos;
				memcpy(buf, r->buf + r->rpos, k);
				r->rpos += k;
			} else if (cap >= sizeof(r->buf)) {
				do
					n = read(r->fd, buf, k);
				while (n < 0 && errno == EINTR);
				if (n < 0)
					return qr_fail(r, -errno);
				if (n == 0)
					return qr_fail(r, -EINVAL);
				k = (size_t)n;
			} else {
				if ((rc = qr_fill(r)) != 0)
					return qr_fail(r, rc > 0 ? -EINVAL : rc);
				break;
			}
			if (!EVP_DigestUpdate(r->md, buf, k))
				return qr_fail(r, -ENOMEM);
			if ((r->left -= k) == 0)
				r->state = QR_REC;
			return (long)k;
		}
	}
}

void
queue_reader_close(struct queue_reader *r)
{
	if (r == NULL)
		return;
	close(r->fd);
	EVP_MD_CTX_free(r->md);
	free(r);
}

/* ---- delivery state ('R' records) -------------------------------------- */

int
queue_file_status(const char *path, size_t nrcpt,
    struct queue_rcpt_status **out)
{
	struct qf_walk *w;
	int rc;

	*out = NULL;
	if ((w = qf_new()) == NULL)
		return -ENOMEM;
	if ((w->st = calloc(nrcpt > 0 ? nrcpt : 1, sizeof(*w->st))) == NULL) {
		qf_free(w);
		return -ENOMEM;
	}
	w->nst = nrcpt;
	if ((rc = qf_walk(path, w, 0)) == 0) {
		*out = w->st;
		w->st = NULL;
	} else {
		queue_status_free(w->st, nrcpt);
		w->st = NULL;
	}
	qf_free(w);
	return rc;
}

void
queue_status_free(struct queue_rcpt_status *st, size_t n)
{
	size_t i;

	if (st == NULL)
		return;
	for (i = 0; i < n; i++)
		free(st[i].reason);
	free(st);
}

/* mark_encode - the 'R' records for marks, back to back, in one buffer. */
static unsigned char *
mark_encode(const struct queue_mark *marks, size_t n, size_t *outlen)
{
	unsigned char sum[EVP_MAX_MD_SIZE], *buf, *p;
	unsigned int slen;
	size_t i, total = 0, rl;

	for (i = 0; i < n; i++) {
		rl = marks[i].reason != NULL ? strlen(marks[i].reason) : 0;
		if (rl > QUEUE__R_REASON_MAX)
			rl = QUEUE__R_REASON_MAX;
		total += QUEUE__REC_HDR + QUEUE__R_FIXED + rl + QUEUE__R_SUM;
	}
	if ((buf = malloc(total > 0 ? total : 1)) == NULL)
		return NULL;
	for (p = buf, i = 0; i < n; i++) {
		rl = marks[i].reason != NULL ? strlen(marks[i].reason) : 0;
		if (rl > QUEUE__R_REASON_MAX)
			rl = QUEUE__R_REASON_MAX;
		p[0] = QUEUE_REC_RCPT_STATE;
		queue__put_le32(p + 1, (uint32_t)(QUEUE__R_FIXED + rl +
		    QUEUE__R_SUM));
		queue__put_le32(p + 5, (uint32_t)marks[i].rcpt);
		p[9] = (unsigned char)marks[i].state;
		queue__put_le64(p + 10, (uint64_t)(int64_t)marks[i].when);
		queue__put_le64(p + 18, (uint64_t)(int64_t)marks[i].next_try);
		queue__put_le32(p + 26, marks[i].attempts);
		if (rl > 0)
			memcpy(p + 30, marks[i].reason, rl);
		slen = 0;
		if (!EVP_Digest(p, QUEUE__REC_HDR + QUEUE__R_FIXED + rl, sum,
		    &slen, EVP_sha256(), NULL)) {
			free(buf);
			return NULL;
		}
		memcpy(p + QUEUE__REC_HDR + QUEUE__R_FIXED + rl, sum,
		    QUEUE__R_SUM);
		p += QUEUE__REC_HDR + QUEUE__R_FIXED + rl + QUEUE__R_SUM;
	}
	*outlen = total;
	return buf;
}

/*
 * queue_file_mark - under an exclusive flock (two jobs of one message may
 * finish together on two pool threads), walk the framing to find where the
 * good part ends, cut a torn tail a crash left behind, append, fdatasync.
 */
int
queue_file_mark(const char *path, const struct queue_mark *marks, size_t n)
{
	struct qf_walk *w = NULL;
	unsigned char *buf = NULL;
	struct stat st;
	size_t len = 0, off;
	ssize_t k;
	int fd, rc;

	for (off = 0; off < n; off++)
		if (marks[off].rcpt >= UINT32_MAX ||
		    (unsigned)marks[off].state > QUEUE_RCPT_BOUNCED)
			return -EINVAL;
	if ((fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC)) < 0)
		return -errno;
	while (flock(fd, LOCK_EX) < 0)
		if (errno != EINTR) {
			rc = -errno;
			goto out;
		}
	if ((w = qf_new()) == NULL || (buf = mark_encode(marks, n,
	    &len)) == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	w->fd = fd;
	if ((rc = qf_walk_fd(w, 0)) != 0)
		goto out;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if ((uint64_t)st.st_size > w->valid_end &&
	    ftruncate(fd, (off_t)w->valid_end) < 0) {
		rc = -errno;
		goto out;
	}
	for (off = 0; off < len; off += (size_t)k) {
		do
			k = write(fd, buf + off, len - off);
		while (k < 0 && errno == EINTR);
		if (k < 0) {
			/* A half record left here is a torn tail: cut next time. */
			rc = -errno;
			goto out;
		}
	}
	if (fdatasync(fd) < 0) {
		rc = -errno;
		goto out;
	}
	rc = 0;
out:
	free(buf);
	qf_free(w);
	close(fd);
	return rc;
}

/* ---- recovery ------------------------------------------------------------ */

/* is_dot - "." or "..". */
static int
is_dot(const char *name)
{
	return name[0] == '.' && (name[1] == '\0' ||
	    (name[1] == '.' && name[2] == '\0'));
}

/* recover_tmp - remove every file in tmp/: none of them was acknowledged. */
static int
recover_tmp(int dfd, const char *spool_dir, void (*log)(void *, int,
    const char *), void *arg)
{
	struct dirent *de;
	DIR *d;
	int fd, n = 0;

	if ((fd = openat(dfd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? 0 : -errno;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d)) != NULL) {
		if (is_dot(de->d_name))
			continue;
		if (unlinkat(fd, de->d_name, 0) < 0) {
			queue__logf(log, arg, LOG_WARNING,
			    "queue: recover: %s/tmp/%s: %s", spool_dir,
			    de->d_name, strerror(errno));
			continue;
		}
		n++;
	}
	closedir(d);
	if (n > 0)
		queue__logf(log, arg, LOG_INFO,
		    "queue: recover: removed %d incomplete file%s from %s/tmp",
		    n, n == 1 ? "" : "s", spool_dir);
	return 0;
}

/* recover_move - put a bad active/ file aside in corrupt/. */
static int
recover_move(int dfd, int afd, int *cfd, const char *name)
{
	if (*cfd < 0) {
		if (mkdirat(dfd, "corrupt", 0700) < 0 && errno != EEXIST)
			return -errno;
		if ((*cfd = openat(dfd, "corrupt", O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC)) < 0)
			return -errno;
	}
	if (renameat(afd, name, *cfd, name) < 0)
		return -errno;
	return 0;
}

int
queue_recover(const char *spool_dir, void (*log)(void *arg, int prio,
    const char *msg), void *arg)
{
	char path[4096];
	struct dirent *de;
	struct stat st;
	DIR *d = NULL;
	int dfd, fd, afd = -1, cfd = -1, rc, good = 0, moved = 0;

	if ((dfd = open(spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? 0 : -errno;
	if ((rc = recover_tmp(dfd, spool_dir, log, arg)) != 0)
		goto out;
	if ((afd = openat(dfd, "active", O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) < 0) {
		rc = errno == ENOENT ? 0 : -errno;
		goto out;
	}
	/* fdopendir takes the fd; keep afd for the *at calls. */
	if ((fd = dup(afd)) < 0) {
		rc = -errno;
		goto out;
	}
	if ((d = fdopendir(fd)) == NULL) {
		rc = -errno;
		close(fd);
		goto out;
	}
	rc = 0;
	while ((de = readdir(d)) != NULL) {
		if (is_dot(de->d_name))
			continue;
		if (fstatat(afd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode)) {
			queue__logf(log, arg, LOG_WARNING,
			    "queue: recover: %s/active/%s: not a regular file, "
			    "ignored", spool_dir, de->d_name);
			continue;
		}
		if ((size_t)snprintf(path, sizeof(path), "%s/active/%s",
		    spool_dir, de->d_name) >= sizeof(path)) {
			rc = -ENAMETOOLONG;
			goto out;
		}
		if ((rc = queue_file_check(path)) == 0) {
			good++;
			continue;
		}
		/*
		 * A damaged file (or one the disk cannot give back) is kept
		 * for a human; anything else (ENOMEM, EMFILE, EACCES) means
		 * we could not judge it, so recovery fails as a whole.
		 */
		if (rc != -EINVAL && rc != -EIO)
			goto out;
		queue__logf(log, arg, LOG_ERR, "queue: recover: %s: %s, moved "
		    "to corrupt/", path, rc == -EINVAL ? "damaged" :
		    strerror(-rc));
		if ((rc = recover_move(dfd, afd, &cfd, de->d_name)) != 0)
			goto out;
		moved++;
	}
	/* Make the moves durable before anyone trusts active/ again. */
	if (moved > 0 && (fsync(afd) < 0 || fsync(cfd) < 0)) {
		rc = -errno;
		goto out;
	}
	rc = good;
out:
	if (d != NULL)
		closedir(d);
	if (cfd >= 0)
		close(cfd);
	if (afd >= 0)
		close(afd);
	close(dfd);
	return rc;
}
