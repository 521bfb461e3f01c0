// What the I/O managers in this target share: making a channel, and reading a byte range of a
// descriptor as libext2fs expects. Internal to the target.
#ifndef IMGTOOL_CEXT2FSFDIO_CHANNEL_H
#define IMGTOOL_CEXT2FSFDIO_CHANNEL_H

#include <ext2fs/ext2fs.h>
#include <stdint.h>

/// A channel of `manager` named `name` (copied), block size 1024, owning `private_data` (freed
/// with the channel by the manager's close). On failure frees `private_data` and returns ENOMEM.
errcode_t imgtool_new_channel(const char *name, io_manager manager, void *private_data, io_channel *channel);

/// Frees a channel made by imgtool_new_channel and its private data.
void imgtool_free_channel(io_channel channel);

/// Where `count` blocks (count > 0) or -count bytes (count < 0, libext2fs's convention) at block
/// `block` lie in the file, past `offset`: sets *at and *size, or returns nonzero when the numbers
/// (which come from the filesystem's own metadata, so may be hostile) overflow.
int imgtool_channel_range(io_channel channel, unsigned long long block, int count, uint64_t offset,
                          uint64_t *at, uint64_t *size);

/// Reads `size` bytes at `at` of `fd` through short reads and EINTR. Past the end of the file it
/// fills zeros and returns EXT2_ET_SHORT_READ, as unix_io does; an error returns errno.
errcode_t imgtool_pread_full(int fd, void *buffer, uint64_t size, uint64_t at);

#endif
