// What Swift cannot do with libdevmapper on its own: take its log messages (the callback is
// variadic, so a C function has to format them) and read the names of a DM_DEVICE_LIST (a
// flexible array member, which Swift does not import).
#ifndef IMGTOOL_CDEVMAPPERSHIM_H
#define IMGTOOL_CDEVMAPPERSHIM_H

#include <stdint.h>
#include <libdevmapper.h>

/// The longest message passed on, terminating NUL included; longer ones are cut and end in "...".
#define IMGTOOL_DM_LOG_MAX 1024

/// libdm's message levels (lib/log/log.h in lvm2; not in libdevmapper.h). The `level` argument of
/// a sink carries flags above these bits (force-stderr, log-once); mask with IMGTOOL_DM_LOG_LEVEL_MASK.
static const int IMGTOOL_DM_LOG_FATAL = 2;
static const int IMGTOOL_DM_LOG_ERR = 3;
static const int IMGTOOL_DM_LOG_WARN = 4;
static const int IMGTOOL_DM_LOG_NOTICE = 5;
static const int IMGTOOL_DM_LOG_INFO = 6;
static const int IMGTOOL_DM_LOG_DEBUG = 7;
static const int IMGTOOL_DM_LOG_LEVEL_MASK = 0x0f;

/// Receives one formatted libdm message. `dm_errno_or_class` is an errno for errors and warnings
/// (0 when there is none) and a message class for debug messages, as libdm passes it. `message`
/// is valid only during the call.
typedef void (*imgtool_dm_log_sink)(int level, const char *file, int line, int dm_errno_or_class,
                                    const char *message);

/// Routes libdm's log into `sink`: registers a variadic callback with dm_log_with_errno_init
/// that formats each message with vsnprintf into a bounded buffer and calls `sink`. NULL restores
/// libdm's default (stderr). Process-wide, like libdm's logging itself.
void imgtool_dm_log_route(imgtool_dm_log_sink sink);

/// The name in one entry of dm_task_get_names' list.
const char *imgtool_dm_names_name(const struct dm_names *names);

#endif
