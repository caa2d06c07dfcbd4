/*
 * ctl_int.h - what bin/signetctl's files share: ctl.c (the dispatcher and
 * the engine, queue and dns records commands) and ctl_keys.c (the managed
 * key commands of issue 5: tenant, domain, dkim enable|disable|rotate|show,
 * dns zone).
 *
 * ctl_err and ctl_config live in ctl_keys.c: the Makefile links every
 * relay/ file but main.c and ctl.c into both programs, so ctl_keys.c must
 * not depend on ctl.c.
 */
#ifndef SIGNET_RELAY_CTL_INT_H
#define SIGNET_RELAY_CTL_INT_H

#include <stddef.h>

#include "relay/relay.h"

#define CTL_EXIT_FAIL 1              /* a command failed */
#define CTL_EXIT_USAGE 2             /* bad usage (and, in the older
					commands, every failure) */

/* -c CONFIG (NULL: the built-in default), set by main. */
extern const char *ctl_config;

/* ctl_err - print "signetctl: ..." and a newline on stderr. */
void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * The managed key commands: argv[0] is the command name ("add", ...);
 * they return the exit status (0, CTL_EXIT_FAIL, CTL_EXIT_USAGE).
 */
int ctl_tenant_add(int argc, char **argv);
int ctl_tenant_list(int argc, char **argv);
int ctl_domain_add(int argc, char **argv);
int ctl_domain_remove(int argc, char **argv);
int ctl_domain_list(int argc, char **argv);
int ctl_dkim_enable(int argc, char **argv);
int ctl_dkim_disable(int argc, char **argv);
int ctl_dkim_rotate(int argc, char **argv);
int ctl_dkim_show(int argc, char **argv);
int ctl_dns_zone(int argc, char **argv);

/*
 * ctl_keys_initial - for `dns records`: the initial domain of the tenant
 * domain (normalized) belongs to in cfg's key store, into out.  1 found,
 * 0 not in the store (or no store yet: a file store whose directory does
 * not exist is not created), -1 when the store could not be read (a
 * warning was printed).
 */
int ctl_keys_initial(const struct relay_config *cfg, const char *domain,
    char *out, size_t outlen);

#endif
