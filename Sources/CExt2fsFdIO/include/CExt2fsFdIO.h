// A libext2fs io_manager that reads an image through a descriptor the caller already holds.
#ifndef IMGTOOL_CEXT2FSFDIO_H
#define IMGTOOL_CEXT2FSFDIO_H

#include <ext2fs/ext2fs.h>

/// Opens channels named "fd:<descriptor>:<byte offset>" (see imgtool_fd_io_name). It never writes
/// (a write or a read-write open fails with EROFS), never fsyncs, and never closes the descriptor,
/// which stays the caller's. Unlike unix_io it does not reopen the image by path, and it does not
/// fsync it on open, which on an image another process is writing would wait for all of that
/// process's dirty pages.
io_manager imgtool_fd_io_manager(void);

#endif
