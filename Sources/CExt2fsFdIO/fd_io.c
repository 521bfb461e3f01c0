#include "CExt2fsFdIO.h"
#include "channel.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/// One channel: a descriptor (fd >= 0) or a callback source, and where the filesystem starts.
struct fd_io_data {
    int fd;
    struct imgtool_read_source *source;
    uint64_t offset;
};

static struct struct_io_manager fd_io_manager;
static struct struct_io_manager source_io_manager;

static errcode_t open_channel(const char *name, io_manager manager, int fd, struct imgtool_read_source *source,
                              uint64_t offset, io_channel *channel);

static errcode_t fd_open(const char *name, int flags, io_channel *channel) {
    if (!name || !channel) return EXT2_ET_BAD_DEVICE_NAME;
    if (flags & IO_FLAG_RW) return EROFS;
    int fd, consumed = 0;
    uint64_t offset;
    if (sscanf(name, "fd:%d:%" SCNu64 "%n", &fd, &offset, &consumed) != 2 || name[consumed] != '\0' || fd < 0)
        return EXT2_ET_BAD_DEVICE_NAME;
    return open_channel(name, &fd_io_manager, fd, NULL, offset, channel);
}

static errcode_t source_open(const char *name, int flags, io_channel *channel) {
    if (!name || !channel) return EXT2_ET_BAD_DEVICE_NAME;
    if (flags & IO_FLAG_RW) return EROFS;
    int consumed = 0;
    uintptr_t address;
    uint64_t offset;
    if (sscanf(name, "src:%" SCNxPTR ":%" SCNu64 "%n", &address, &offset, &consumed) != 2 || name[consumed] != '\0' ||
        address == 0)
        return EXT2_ET_BAD_DEVICE_NAME;
    return open_channel(name, &source_io_manager, -1, (struct imgtool_read_source *)address, offset, channel);
}

static errcode_t open_channel(const char *name, io_manager manager, int fd, struct imgtool_read_source *source,
                              uint64_t offset, io_channel *channel) {
    struct fd_io_data *data = calloc(1, sizeof(*data));
    if (data) *data = (struct fd_io_data){fd, source, offset};
    return imgtool_new_channel(name, manager, data, channel);
}

static errcode_t fd_close(io_channel channel) {
    if (--channel->refcount > 0) return 0;
    imgtool_free_channel(channel);
    return 0;
}

static errcode_t fd_set_blksize(io_channel channel, int blksize) {
    if (blksize <= 0) return EXT2_ET_INVALID_ARGUMENT;
    channel->block_size = blksize;
    return 0;
}

/// count > 0 is a number of blocks, count < 0 a number of bytes (libext2fs's convention).
static errcode_t fd_read_blk64(io_channel channel, unsigned long long block, int count, void *buffer) {
    struct fd_io_data *data = channel->private_data;
    uint64_t at, size;
    if (imgtool_channel_range(channel, block, count, data->offset, &at, &size)) return EXT2_ET_SHORT_READ;
    if (data->source) {
        struct imgtool_read_source *source = data->source;
        uint64_t available = at < source->size ? source->size - at : 0;
        uint64_t wanted = size < available ? size : available;
        if (wanted > 0) {
            int err = source->read(source->context, at, buffer, wanted);
            if (err) return err;
        }
        if (wanted < size) {
            memset((char *)buffer + wanted, 0, size - wanted);
            return EXT2_ET_SHORT_READ;
        }
        return 0;
    }
    return imgtool_pread_full(data->fd, buffer, size, at);
}

static errcode_t fd_read_blk(io_channel channel, unsigned long block, int count, void *buffer) {
    return fd_read_blk64(channel, block, count, buffer);
}

static errcode_t fd_write_blk64(io_channel channel, unsigned long long block, int count, const void *buffer) {
    (void)channel; (void)block; (void)count; (void)buffer;
    return EROFS;
}

static errcode_t fd_write_blk(io_channel channel, unsigned long block, int count, const void *buffer) {
    return fd_write_blk64(channel, block, count, buffer);
}

static errcode_t fd_write_byte(io_channel channel, unsigned long offset, int count, const void *buffer) {
    (void)channel; (void)offset; (void)count; (void)buffer;
    return EROFS;
}

static errcode_t fd_flush(io_channel channel) {
    (void)channel;
    return 0;
}

static errcode_t fd_set_option(io_channel channel, const char *option, const char *arg) {
    (void)channel; (void)option; (void)arg;
    return EXT2_ET_INVALID_ARGUMENT;
}

static struct struct_io_manager fd_io_manager = {
    .magic = EXT2_ET_MAGIC_IO_MANAGER,
    .name = "imgtool read-only descriptor I/O manager",
    .open = fd_open,
    .close = fd_close,
    .set_blksize = fd_set_blksize,
    .read_blk = fd_read_blk,
    .write_blk = fd_write_blk,
    .flush = fd_flush,
    .write_byte = fd_write_byte,
    .set_option = fd_set_option,
    .read_blk64 = fd_read_blk64,
    .write_blk64 = fd_write_blk64,
};

static struct struct_io_manager source_io_manager = {
    .magic = EXT2_ET_MAGIC_IO_MANAGER,
    .name = "imgtool read-only callback I/O manager",
    .open = source_open,
    .close = fd_close,
    .set_blksize = fd_set_blksize,
    .read_blk = fd_read_blk,
    .write_blk = fd_write_blk,
    .flush = fd_flush,
    .write_byte = fd_write_byte,
    .set_option = fd_set_option,
    .read_blk64 = fd_read_blk64,
    .write_blk64 = fd_write_blk64,
};

io_manager imgtool_fd_io_manager(void) { return &fd_io_manager; }

io_manager imgtool_source_io_manager(void) { return &source_io_manager; }

