#include <ext2fs/ext2fs.h>
#include <et/com_err.h>
