/*
 * server_int.h - what server.c shares with parse.c (the resumable DATA/BDAT
 * byte parser, command-line and address parsing) and reply.c (the output
 * chain and reply formatting), and what the unit tests reach.  smtp__
 * prefix; nothing outside smtp/ and tests/unit includes this.
 */
#ifndef SIGNET_SMTP_SERVER_INT_H
#define SIGNET_SMTP_SERVER_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "smtp/smtp.h"

/*
 * A borrowed slice of the session's read buffer: valid until the buffer is
 * next compacted, i.e. until the command that received it returns.
 */
struct smtp__slice {
	const char *p;
	size_t len;
};

/* RFC 5321 4.5.3.1: limits, in octets. */
#define SMTP__CMD_LINE_MAX  512      /* command line, CRLF included */
#define SMTP__DSN_LINE_MAX  (512 + 1024) /* MAIL/RCPT: +ENVID, ORCPT, ... (RFC 3461 5) */
#define SMTP__SASL_LINE_MAX 12288    /* AUTH and its responses (RFC 4954 4) */
#define SMTP__TEXT_LINE_MAX 998      /* text line without its CRLF (4.5.3.1.6) */
#define SMTP__PATH_MAX      256      /* path, brackets excluded (4.5.3.1.3) */
#define SMTP__DOMAIN_MAX    255
#define SMTP__ENVID_MAX     100      /* RFC 3461 4.4 */
#define SMTP__ORCPT_MAX     500      /* RFC 3461 4.2 */

/* ---- parse.c: the DATA / BDAT byte parser --------------------------------- */

/*
 * A message arrives as DATA text (dot-stuffed, ended by <CRLF>.<CRLF>) or as
 * BDAT chunks (raw).  smtp__data_feed takes it in pieces split anywhere and
 * passes the message bytes on, unstuffed, through out(); its state survives
 * between calls.  Only <CRLF>.<CRLF> ends DATA (RFC 5321 4.1.1.4); a CR
 * not followed by LF, or an LF not preceded by CR, is "bare": under
 * SMTP_BARE_REJECT it sets SMTP__DATA_F_BARE (the bytes still pass through,
 * the caller throws the message away), under SMTP_BARE_NORMALIZE it becomes
 * CRLF, under SMTP_BARE_ALLOW it passes unchanged.  A bare newline never
 * starts a line: a dot after it is text, and it can never end DATA.
 */
#define SMTP__DATA_F_BARE 0x01   /* a bare CR or LF was seen */
#define SMTP__DATA_F_LONG 0x02   /* a text line exceeded SMTP__TEXT_LINE_MAX */

enum smtp__data_state {
	SMTP__D_BOL,     /* at the start of a line */
	SMTP__D_TEXT,    /* inside a line */
	SMTP__D_CR,      /* a CR ended the last input; not passed on yet */
	SMTP__D_DOT,     /* "." at the start of a line (DATA) */
	SMTP__D_DOTCR,   /* "." CR at the start of a line (DATA) */
	SMTP__D_DONE     /* <CRLF>.<CRLF> seen */
};

typedef void (*smtp__data_out_cb)(void *arg, const char *p, size_t len);

struct smtp__data {
	enum smtp__data_state state;
	enum smtp_bare_newline bare;
	int raw;                /* BDAT: no dot-stuffing, no terminator */
	int flags;              /* SMTP__DATA_F_* */
	size_t line_len;        /* octets of the current line on the wire */
	uint64_t out_len;       /* bytes passed to out() */
};

/* smtp__data_init - ready for a new message; can't fail. */
void smtp__data_init(struct smtp__data *d, int raw, enum smtp_bare_newline bare);
/*
 * smtp__data_feed - parse len bytes.  Returns how many were consumed: all of
 * them, or (DATA) up to and including the terminator, after which the
 * state is SMTP__D_DONE and the rest of the input is the next command.
 */
size_t smtp__data_feed(struct smtp__data *d, const char *p, size_t len,
    smtp__data_out_cb out, void *arg);
/* smtp__data_end - BDAT LAST: settle a CR left pending by the last chunk. */
void smtp__data_end(struct smtp__data *d, smtp__data_out_cb out, void *arg);

/* ---- parse.c: command lines ---------------------------------------------- */

/*
 * smtp__cmd_split - split a command line (no CRLF) into the verb (up to the
 * first space) and its arguments (leading and trailing spaces dropped).
 */
void smtp__cmd_split(const char *line, size_t len, struct smtp__slice *verb,
    struct smtp__slice *args);
/* smtp__slice_eq - case-insensitive compare of a slice with a C string. */
int smtp__slice_eq(struct smtp__slice s, const char *z);
/* smtp__cmd_line_max - the line limit (CRLF included) for a verb. */
size_t smtp__cmd_line_max(const char *line, size_t len);

#define SMTP__PATH_NULL_OK 0x01  /* "<>" is allowed (MAIL FROM) */

/*
 * smtp__parse_path - parse a Reverse-path or Forward-path at p (RFC 5321
 * 4.1.2: "<" [A-d-l ":"] Mailbox ">", quoted local parts, address
 * literals, RFC 6531 UTF-8).  The address without brackets and source route
 * goes to out (NUL-terminated; "" for "<>"); *utf8 is set when it has
 * non-ASCII octets.  Returns the octets consumed, or -1 on bad syntax.
 */
long smtp__parse_path(const char *p, size_t len, int flags, char *out,
    size_t outlen, int *utf8);

/* MAIL FROM parameters (RFC 1870, 6152, 6531, 3461). */
struct smtp__mail_params {
	int has_size;
	uint64_t size;
	int body_8bit;
	int smtputf8;
	int ret;                        /* enum queue_ret */
	int has_envid;
	char envid[SMTP__ENVID_MAX + 1]; /* xtext-decoded */
};

/* RCPT TO parameters (RFC 3461). */
struct smtp__rcpt_params {
	int notify;                     /* QUEUE_NOTIFY_* */
	int has_orcpt;
	char orcpt[SMTP__ORCPT_MAX + 16]; /* "addr-type;" + decoded address */
};

/*
 * smtp__parse_mail_params / _rcpt_params - the parameters after the path.
 * 0, or the SMTP reply code (501 syntax, 555 unknown or unsupported) with
 * the whole reply line (no CRLF) in err.
 */
int smtp__parse_mail_params(const char *p, size_t len,
    struct smtp__mail_params *mp, char *err, size_t errlen);
int smtp__parse_rcpt_params(const char *p, size_t len,
    struct smtp__rcpt_params *rp, char *err, size_t errlen);

/*
 * smtp__xtext_decode - RFC 3461 4: "+HH" escapes; every decoded octet must
 * be printable ASCII.  Returns the length written to out (NUL-terminated),
 * or -1.
 */
long smtp__xtext_decode(const char *p, size_t len, char *out, size_t outlen);

/* smtp__parse_bdat - "n [LAST]" (RFC 3030); 0 or -1. */
int smtp__parse_bdat(const char *p, size_t len, uint64_t *size, int *last);

/*
 * smtp__helo_ok - an acceptable EHLO/HELO argument: 1..255 printable ASCII
 * octets without spaces.  Lenient on purpose (Postfix by default accepts
 * anything); it ends up in Received: and the logs.
 */
int smtp__helo_ok(const char *p, size_t len);

/* ---- reply.c: output chain ------------------------------------------------ */

/*
 * Output is a chain of blocks written with one uv_write of several buffers
 * (Redis reply blocks, ngx_chain_t).  A block stays alive until the write
 * callback that covers it has run.
 */
struct smtp__oblock {
	struct smtp__oblock *next;
	size_t len, cap;
	char data[];
};

struct smtp__ochain {
	struct smtp__oblock *head, *tail;
	size_t bytes;
	size_t nblocks;
};

/* smtp__ochain_add - append bytes (copied); aborts on OOM. */
void smtp__ochain_add(struct smtp__ochain *c, const char *p, size_t len);
/* smtp__ochain_move - append every block of src to dst; src ends empty. */
void smtp__ochain_move(struct smtp__ochain *dst, struct smtp__ochain *src);
/*
 * smtp__ochain_take - detach up to max blocks from the head of c into a
 * separate list (returned), filling bufs; *n is how many.
 */
struct smtp__oblock *smtp__ochain_take(struct smtp__ochain *c, uv_buf_t *bufs,
    unsigned max, unsigned *n);
/* smtp__oblock_free_list - free a detached list; NULL ok. */
void smtp__oblock_free_list(struct smtp__oblock *b);
/* smtp__ochain_reset - free every block. */
void smtp__ochain_reset(struct smtp__ochain *c);

/*
 * smtp__reply_vadd - format one reply line ("250 2.0.0 Ok", no CRLF in
 * fmt) into c with CRLF; a line over 512 octets is cut.  Returns the reply
 * code read from the first three digits (0 if there are none).
 */
int smtp__reply_vadd(struct smtp__ochain *c, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/*
 * smtp__rfc5322_date - "Sat, 22 Nov 2025 18:03:00 +0100" for t, in local
 * time, without depending on the locale; out must hold 40 octets.
 */
void smtp__rfc5322_date(time_t t, char *out, size_t outlen);

#endif
