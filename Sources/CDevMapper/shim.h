// libdevmapper from the distribution's libdevmapper-dev. The CLI's static build links the same
// version's static archive (Scripts/build-libdevmapper.sh) against this same header.
#include <libdevmapper.h>
// DM_NAME_LEN, DM_UUID_LEN: the kernel's limits, terminating NUL included.
#include <linux/dm-ioctl.h>
