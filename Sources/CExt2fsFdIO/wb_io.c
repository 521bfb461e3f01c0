// A libext2fs io_manager that writes through a descriptor the caller holds, keeping written blocks
// in memory until a flush writes them in block order, consecutive blocks in one pwrite, and keeping
// blocks read: unix_io writes each block as it comes and caches 8 (about 9000 writes and 3500
// reads to put GRUB's files into a filesystem).
#include "CExt2fsFdIO.h"
#include "channel.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

struct wb_entry {
    uint64_t block;
    unsigned char *data;  // NULL: an empty slot
    int dirty;            // written, not yet flushed; else a copy of what the file holds
};

struct wb_data {
    int fd;
    uint64_t offset;
    struct wb_entry *table;  // open addressing, capacity a power of two
    size_t capacity, count;
};

static struct struct_io_manager wb_io_manager;

static size_t wb_slot(const struct wb_data *d, uint64_t block) {
    return (size_t)((block * 0x9E3779B97F4A7C15ull) >> 17) & (d->capacity - 1);
}

static struct wb_entry *wb_find(const struct wb_data *d, uint64_t block) {
    if (d->capacity == 0) return NULL;
    for (size_t i = wb_slot(d, block);; i = (i + 1) & (d->capacity - 1)) {
        if (!d->table[i].data) return NULL;
        if (d->table[i].block == block) return &d->table[i];
    }
}

static void wb_clear(struct wb_data *d) {
    for (size_t i = 0; i < d->capacity; i++) free(d->table[i].data);
    free(d->table);
    d->table = NULL;
    d->capacity = d->count = 0;
}

static errcode_t wb_grow(struct wb_data *d) {
    size_t capacity = d->capacity ? d->capacity * 2 : 1024;
    struct wb_entry *table = calloc(capacity, sizeof(*table));
    if (!table) return ENOMEM;
    struct wb_data grown = {.table = table, .capacity = capacity};
    for (size_t i = 0; i < d->capacity; i++) {
        if (!d->table[i].data) continue;
        size_t j = wb_slot(&grown, d->table[i].block);
        while (table[j].data) j = (j + 1) & (capacity - 1);
        table[j] = d->table[i];
    }
    free(d->table);
    d->table = table;
    d->capacity = capacity;
    return 0;
}

/// Keeps a copy of one block of `size` bytes, `dirty` when it was written.
static errcode_t wb_store(struct wb_data *d, uint64_t block, const void *bytes, size_t size, int dirty) {
    struct wb_entry *e = wb_find(d, block);
    if (e) {
        memcpy(e->data, bytes, size);
        e->dirty |= dirty;
        return 0;
    }
    if ((d->count + 1) * 2 > d->capacity) {
        errcode_t err = wb_grow(d);
        if (err) return err;
    }
    unsigned char *copy = malloc(size);
    if (!copy) return ENOMEM;
    memcpy(copy, bytes, size);
    size_t i = wb_slot(d, block);
    while (d->table[i].data) i = (i + 1) & (d->capacity - 1);
    d->table[i] = (struct wb_entry){block, copy, dirty};
    d->count++;
    return 0;
}

static errcode_t wb_pwrite(int fd, const void *buffer, uint64_t size, uint64_t at) {
    uint64_t done = 0;
    while (done < size) {
        ssize_t n = pwrite(fd, (const char *)buffer + done, size - done, (off_t)(at + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno;
        if (n == 0) return EXT2_ET_SHORT_WRITE;
        done += (uint64_t)n;
    }
    return 0;
}

static int wb_compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/// pwritev(2) of all of `iov`, through short writes and EINTR.
static errcode_t wb_pwritev(int fd, struct iovec *iov, int n, uint64_t at) {
    while (n > 0) {
        ssize_t w = pwritev(fd, iov, n, (off_t)at);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return errno;
        if (w == 0) return EXT2_ET_SHORT_WRITE;
        at += (uint64_t)w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/// Writes every written block in block order, runs of consecutive blocks in one pwritev straight
/// from where they are kept, and forgets all kept blocks. Block numbers are sorted, not entries:
/// qsort moves 8-byte elements directly, and 24-byte entries through its slower indirect path.
static errcode_t wb_write_out(io_channel channel) {
    struct wb_data *d = channel->private_data;
    if (d->count == 0) return 0;
    size_t n = 0, bs = (size_t)channel->block_size;
    enum { RUN = 256 };  // below IOV_MAX (1024)
    uint64_t *blocks = malloc(d->count * sizeof(*blocks));
    struct iovec iov[RUN];
    errcode_t err = blocks ? 0 : ENOMEM;
    if (!err) {
        for (size_t i = 0; i < d->capacity; i++) if (d->table[i].data && d->table[i].dirty) blocks[n++] = d->table[i].block;
        qsort(blocks, n, sizeof(*blocks), wb_compare);
        for (size_t i = 0; i < n && !err;) {
            int length = 0;
            while (i + (size_t)length < n && length < RUN && blocks[i + (size_t)length] == blocks[i] + (uint64_t)length) {
                iov[length] = (struct iovec){.iov_base = wb_find(d, blocks[i + (size_t)length])->data, .iov_len = bs};
                length++;
            }
            err = wb_pwritev(d->fd, iov, length, d->offset + blocks[i] * bs);
            i += (size_t)length;
        }
    }
    free(blocks);
    if (!err) wb_clear(d);
    return err;
}

static errcode_t wb_open(const char *name, int flags, io_channel *channel) {
    (void)flags;
    if (!name || !channel) return EXT2_ET_BAD_DEVICE_NAME;
    int fd, consumed = 0;
    uint64_t offset;
    if (sscanf(name, "wb:%d:%" SCNu64 "%n", &fd, &offset, &consumed) != 2 || name[consumed] != '\0' || fd < 0)
        return EXT2_ET_BAD_DEVICE_NAME;
    struct wb_data *data = calloc(1, sizeof(*data));
    if (data) *data = (struct wb_data){.fd = fd, .offset = offset};
    return imgtool_new_channel(name, &wb_io_manager, data, channel);
}

static errcode_t wb_close(io_channel channel) {
    if (--channel->refcount > 0) return 0;
    errcode_t err = wb_write_out(channel);
    wb_clear(channel->private_data);
    imgtool_free_channel(channel);
    return err;
}

static errcode_t wb_set_blksize(io_channel channel, int blksize) {
    if (blksize <= 0) return EXT2_ET_INVALID_ARGUMENT;
    // Kept blocks are numbered in the old size.
    errcode_t err = wb_write_out(channel);
    if (err) return err;
    channel->block_size = blksize;
    return 0;
}

/// count > 0 is a number of blocks, count < 0 a number of bytes (libext2fs's convention).
static errcode_t wb_read_blk64(io_channel channel, unsigned long long block, int count, void *buffer) {
    struct wb_data *d = channel->private_data;
    uint64_t bs = (uint64_t)channel->block_size, at, size;
    if (imgtool_channel_range(channel, block, count, d->offset, &at, &size)) return EXT2_ET_SHORT_READ;
    // Blocks read back right after they were written (an inode table block, a directory) need
    // no read at all.
    if (size % bs == 0) {
        uint64_t i = 0;
        while (i * bs < size && wb_find(d, block + i)) i++;
        if (i * bs == size) {
            for (i = 0; i * bs < size; i++) memcpy((char *)buffer + i * bs, wb_find(d, block + i)->data, bs);
            return 0;
        }
    }
    errcode_t result = imgtool_pread_full(d->fd, buffer, size, at);
    if (result && result != EXT2_ET_SHORT_READ) return result;
    // What was written and not yet flushed wins over what the file still holds; whole blocks
    // read are kept too (the directories every lookup reads again).
    for (uint64_t i = 0; i * bs < size; i++) {
        struct wb_entry *e = wb_find(d, block + i);
        if (e) memcpy((char *)buffer + i * bs, e->data, size - i * bs < bs ? size - i * bs : bs);
        else if (result == 0 && size % bs == 0 && wb_store(d, block + i, (char *)buffer + i * bs, (size_t)bs, 0) != 0) break;
    }
    return result;
}

static errcode_t wb_read_blk(io_channel channel, unsigned long block, int count, void *buffer) {
    return wb_read_blk64(channel, block, count, buffer);
}

static errcode_t wb_write_byte(io_channel channel, unsigned long offset, int count, const void *buffer) {
    struct wb_data *d = channel->private_data;
    if (count < 0) return EXT2_ET_INVALID_ARGUMENT;
    // Rare (the superblock): write out what is kept first, so that nothing older lands on top.
    errcode_t err = wb_write_out(channel);
    return err ? err : wb_pwrite(d->fd, buffer, (uint64_t)count, d->offset + offset);
}

static errcode_t wb_write_blk64(io_channel channel, unsigned long long block, int count, const void *buffer) {
    struct wb_data *d = channel->private_data;
    uint64_t bs = (uint64_t)channel->block_size;
    uint64_t size = count < 0 ? (uint64_t)-(int64_t)count : (uint64_t)count * bs;
    if (size % bs != 0) {
        uint64_t at;
        if (__builtin_mul_overflow((uint64_t)block, bs, &at)) return EXT2_ET_INVALID_ARGUMENT;
        return wb_write_byte(channel, (unsigned long)at, (int)size, buffer);
    }
    for (uint64_t i = 0; i * bs < size; i++) {
        errcode_t err = wb_store(d, block + i, (const char *)buffer + i * bs, (size_t)bs, 1);
        if (err) return err;
    }
    return 0;
}

static errcode_t wb_write_blk(io_channel channel, unsigned long block, int count, const void *buffer) {
    return wb_write_blk64(channel, block, count, buffer);
}

static errcode_t wb_flush(io_channel channel) { return wb_write_out(channel); }

static errcode_t wb_set_option(io_channel channel, const char *option, const char *arg) {
    (void)channel; (void)option; (void)arg;
    return EXT2_ET_INVALID_ARGUMENT;
}

static struct struct_io_manager wb_io_manager = {
    .magic = EXT2_ET_MAGIC_IO_MANAGER,
    .name = "imgtool write-back descriptor I/O manager",
    .open = wb_open,
    .close = wb_close,
    .set_blksize = wb_set_blksize,
    .read_blk = wb_read_blk,
    .write_blk = wb_write_blk,
    .flush = wb_flush,
    .write_byte = wb_write_byte,
    .set_option = wb_set_option,
    .read_blk64 = wb_read_blk64,
    .write_blk64 = wb_write_blk64,
};

io_manager imgtool_write_back_io_manager(void) { return &wb_io_manager; }

void imgtool_write_back_discard(io_channel channel) {
    if (channel && channel->manager == &wb_io_manager) wb_clear(channel->private_data);
}
