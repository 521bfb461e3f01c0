#include "CDevMapperShim.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static _Atomic(imgtool_dm_log_sink) imgtool_dm_sink;

__attribute__((format(printf, 5, 6)))
static void imgtool_dm_log_trampoline(int level, const char *file, int line, int dm_errno_or_class,
                                      const char *format, ...)
{
    imgtool_dm_log_sink sink = atomic_load(&imgtool_dm_sink);
    if (!sink)
        return;
    char message[IMGTOOL_DM_LOG_MAX];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(message, sizeof message, format, args);
    va_end(args);
    if (n < 0)
        snprintf(message, sizeof message, "(libdevmapper message not formattable: \"%s\")", format);
    else if ((size_t)n >= sizeof message)
        memcpy(message + sizeof message - 4, "...", 4);
    sink(level, file, line, dm_errno_or_class, message);
}

void imgtool_dm_log_route(imgtool_dm_log_sink sink)
{
    atomic_store(&imgtool_dm_sink, sink);
    dm_log_with_errno_init(sink ? imgtool_dm_log_trampoline : NULL);
}

const char *imgtool_dm_names_name(const struct dm_names *names)
{
    return names->name;
}
