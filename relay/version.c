/*
 * version.c - the version string compiled into every binary, so that a
 * program reports the version of the objects it was linked from rather than
 * that of whichever relay.h its caller happened to see.
 */
#include "relay/relay.h"

const char *
relay_version(void)
{
	return SIGNET_VERSION;
}
