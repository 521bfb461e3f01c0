#include <ext2fs/ext2fs.h>
#include <et/com_err.h>

/* Swift 6 refuses to read mutable C globals; libext2fs only ever reads this one. */
static inline io_manager imgtool_unix_io_manager(void) { return unix_io_manager; }
