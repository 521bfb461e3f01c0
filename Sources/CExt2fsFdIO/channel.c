#include "channel.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

errcode_t imgtool_new_channel(const char *name, io_manager manager, void *private_data, io_channel *channel) {
    io_channel io = calloc(1, sizeof(*io));
    char *copy = strdup(name);
    if (!io || !copy || !private_data) {
        free(io);
        free(copy);
        free(private_data);
        return ENOMEM;
    }
    io->magic = EXT2_ET_MAGIC_IO_CHANNEL;
    io->manager = manager;
    io->name = copy;
    io->block_size = 1024;
    io->refcount = 1;
    io->private_data = private_data;
    *channel = io;
    return 0;
}

void imgtool_free_channel(io_channel channel) {
    free(channel->private_data);
    free(channel->name);
    free(channel);
}

int imgtool_channel_range(io_channel channel, unsigned long long block, int count, uint64_t offset,
                          uint64_t *at, uint64_t *size) {
    uint64_t bs = (uint64_t)channel->block_size;
    *size = count < 0 ? (uint64_t)-(int64_t)count : (uint64_t)count * bs;
    return __builtin_mul_overflow((uint64_t)block, bs, at) || __builtin_add_overflow(*at, offset, at) ||
           *at > INT64_MAX || *size > INT64_MAX - *at;
}

errcode_t imgtool_pread_full(int fd, void *buffer, uint64_t size, uint64_t at) {
    uint64_t done = 0;
    while (done < size) {
        ssize_t n = pread(fd, (char *)buffer + done, size - done, (off_t)(at + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno;
        if (n == 0) {
            memset((char *)buffer + done, 0, size - done);
            return EXT2_ET_SHORT_READ;
        }
        done += (uint64_t)n;
    }
    return 0;
}
