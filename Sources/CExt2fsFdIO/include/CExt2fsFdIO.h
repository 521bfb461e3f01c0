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

/// Where a "src:" channel reads: `read(context, offset, buffer, count)` fills exactly `count` bytes
/// at byte `offset` of the source and returns 0, or returns an errno value. For sources that are
/// not a descriptor (a container's virtual disk, read by Swift code).
struct imgtool_read_source {
    void *context;
    int (*read)(void *context, uint64_t offset, void *buffer, uint64_t count);
    /// The source's size in bytes; reads past it return zeros and EXT2_ET_SHORT_READ, as past the
    /// end of a file.
    uint64_t size;
};

/// Opens channels named "src:<address of a struct imgtool_read_source, hex>:<byte offset>", which
/// read through the callback. Read-only in the same way as imgtool_fd_io_manager; the struct must
/// outlive the channel.
io_manager imgtool_source_io_manager(void);

/// Opens channels named "wb:<descriptor>:<byte offset>" for reading and writing through a
/// descriptor the caller holds (and closes). Written blocks are kept in memory and written at a
/// flush or close in block order, consecutive blocks in one pwrite; reads see them, and blocks read
/// are kept until then too. It never fsyncs.
io_manager imgtool_write_back_io_manager(void);

/// Forgets the blocks a write-back channel keeps, written or read, without writing them: for a
/// writer stopped by an error, whose half-done work must not reach the file at close.
void imgtool_write_back_discard(io_channel channel);

#endif
